//! The one seam between pipetrail's storage logic and a database: Spin's SQLite inside the
//! components, rusqlite in the native tool and the tests, and PostgreSQL.
//!
//! Statements are written once, in the SQL both databases accept (`?` placeholders,
//! `INSERT … ON CONFLICT`, `RETURNING`). What differs is the implementation's business:
//! a PostgreSQL `Sql` numbers the placeholders (`numbered_placeholders`), opens the writer's
//! transaction its own way (`begin_writer`), reports booleans as 0/1 and counts changed
//! rows itself. The schema differs too (`store::schema` picks by `dialect`).
//!
//! Every write that touches the ledger runs in [`in_writer`]: one writer at a time,
//! serialized by the database (never by component memory), committed whole or not at all.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Val {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Val::Blob(b) => Some(b),
            _ => None,
        }
    }
    pub fn text(s: impl Into<String>) -> Val {
        Val::Text(s.into())
    }
    pub fn opt_text(s: Option<&str>) -> Val {
        s.map_or(Val::Null, |s| Val::Text(s.into()))
    }
    pub fn int(i: u64) -> Val {
        // SQLite integers are signed 64-bit; ids above i64::MAX are refused at the edge.
        Val::Int(i as i64)
    }
    pub fn opt_int(i: Option<u64>) -> Val {
        i.map_or(Val::Null, Val::int)
    }
}

pub type Row = Vec<Val>;

#[derive(Debug, Clone, PartialEq)]
pub enum DbError {
    /// The database or its disk is full: the caller answers 503 and may retry later.
    Full(String),
    /// The database's filesystem takes no writes: 503, retry later, as for `Full`.
    ReadOnly(String),
    /// The writer's lock was not had in time (a burst of deliveries): 503, retry soon.
    Busy(String),
    /// The disk failed a read or write (SQLite's "disk I/O error"; on a full disk a new
    /// connection cannot even size its shared-memory file): 503, retry later.
    Io(String),
    Other(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Full(m) => write!(f, "database full: {m}"),
            DbError::ReadOnly(m) => write!(f, "database read-only: {m}"),
            DbError::Busy(m) => write!(f, "database busy: {m}"),
            DbError::Io(m) => write!(f, "database I/O error: {m}"),
            DbError::Other(m) => write!(f, "database error: {m}"),
        }
    }
}

impl std::error::Error for DbError {}

/// A database connection. Spin's SQLite API is async, so this is too; the rusqlite
/// implementation completes at once and is driven by [`block_on`].
#[allow(async_fn_in_trait)]
pub trait Sql {
    async fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError>;

    async fn exec(&self, sql: &str, params: &[Val]) -> Result<(), DbError> {
        self.query(sql, params).await.map(|_| ())
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// Rows inserted, changed or deleted by the last statement.
    async fn changes(&self) -> Result<u64, DbError> {
        sqlite_changes(self).await
    }

    /// Opens the writer's transaction, waiting for any other writer to finish: SQLite's
    /// `BEGIN IMMEDIATE`; a PostgreSQL `Sql` runs [`PG_BEGIN_WRITER`] instead. Called by
    /// [`in_writer`] only.
    async fn begin_writer(&self) -> Result<(), DbError> {
        self.exec("BEGIN IMMEDIATE", &[]).await
    }

    /// Opens the writer's transaction only if no other writer holds it; `Ok(false)`, with
    /// nothing open, when one does. SQLite: `BEGIN IMMEDIATE` with the connection's busy
    /// timeout at 0 for that statement (then back to the 5 s Spin and rusqlite set);
    /// PostgreSQL: `pg_try_advisory_xact_lock`. Called by [`in_writer_if_free`] only.
    async fn try_begin_writer(&self) -> Result<bool, DbError> {
        match self.dialect() {
            Dialect::Sqlite => {
                self.exec("PRAGMA busy_timeout = 0", &[]).await?;
                let began = self.exec("BEGIN IMMEDIATE", &[]).await;
                self.exec("PRAGMA busy_timeout = 5000", &[]).await?;
                match began {
                    Ok(()) => Ok(true),
                    Err(DbError::Busy(_)) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Dialect::Postgres => {
                self.exec(PG_BEGIN_WRITER[0], &[]).await?;
                self.exec(PG_BEGIN_WRITER[1], &[]).await?;
                let rows = self
                    .query(&format!("SELECT pg_try_advisory_xact_lock({PG_WRITER_LOCK})"), &[])
                    .await?;
                if rows.first().and_then(|r| r.first()).and_then(Val::as_i64) == Some(1) {
                    Ok(true)
                } else {
                    self.exec("ROLLBACK", &[]).await?;
                    Ok(false)
                }
            }
        }
    }
}

/// `in_writer`, unless another writer holds the lock: then `Ok(None)` at once, nothing run.
pub async fn in_writer_if_free<S: Sql + ?Sized, T>(
    db: &S,
    body: impl AsyncFnOnce() -> Result<T, DbError>,
) -> Result<Option<T>, DbError> {
    if !db.try_begin_writer().await? {
        return Ok(None);
    }
    match body().await {
        Ok(v) => {
            db.exec("COMMIT", &[]).await?;
            Ok(Some(v))
        }
        Err(e) => {
            let _ = db.exec("ROLLBACK", &[]).await;
            Err(e)
        }
    }
}

/// Runs `body` in the writer's transaction: commits when it returns Ok, rolls back (and
/// reports the body's error) when it returns Err, so nothing is ever half-written.
pub async fn in_writer<S: Sql + ?Sized, T>(
    db: &S,
    body: impl AsyncFnOnce() -> Result<T, DbError>,
) -> Result<T, DbError> {
    db.begin_writer().await?;
    match body().await {
        Ok(v) => {
            db.exec("COMMIT", &[]).await?;
            Ok(v)
        }
        Err(e) => {
            let _ = db.exec("ROLLBACK", &[]).await;
            Err(e)
        }
    }
}

/// SQLite's count of rows the last statement changed, asked of the connection itself.
pub async fn sqlite_changes<S: Sql + ?Sized>(db: &S) -> Result<u64, DbError> {
    let rows = db.query("SELECT changes()", &[]).await?;
    Ok(rows.first().and_then(|r| r.first()).and_then(Val::as_i64).unwrap_or(0) as u64)
}

/// PostgreSQL error codes that mean "out of room": disk_full and out_of_memory. The caller
/// answers 503 and may retry, as for a full SQLite database.
pub fn pg_code_is_full(code: &str) -> bool {
    matches!(code, "53100" | "53200")
}

/// PostgreSQL error codes that mean "not now": a lock or statement timeout, a serialization
/// failure or deadlock, too many connections. The caller answers 503 and may retry soon.
pub fn pg_code_is_busy(code: &str) -> bool {
    matches!(code, "55P03" | "57014" | "40001" | "40P01" | "53300")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The transaction-scoped advisory lock every PostgreSQL ledger writer takes in
/// `begin_writer`: appends are serialized by the database, whichever instance or host
/// runs them, never by memory.
pub const PG_WRITER_LOCK: i64 = 0x7069_7065_7472_6169; // "pipetrai"

/// The statements a PostgreSQL `Sql` runs in `begin_writer`. The transaction bounds
/// what a crashed writer can cost the others: Spin returns a trapped instance's connection
/// to its pool still inside the transaction and holding the lock, so PostgreSQL ends a
/// writer's transaction that sits idle for 3 s (rolling it back, freeing the lock), and a
/// writer waits at most 8 s for the lock (then `storage_busy`, 503: GitLab waits 10 s).
pub const PG_BEGIN_WRITER: [&str; 3] = [
    "BEGIN",
    "SELECT set_config('idle_in_transaction_session_timeout', '3s', true), set_config('lock_timeout', '8s', true)",
    "SELECT pg_advisory_xact_lock(8100128985850208617)",
];

/// Whether a statement answers with rows (a query, or a write with `RETURNING`); a write
/// without is run for its count of changed rows.
pub fn returns_rows(sql: &str) -> bool {
    let verb = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    !matches!(verb.as_str(), "INSERT" | "UPDATE" | "DELETE") || sql.to_ascii_uppercase().contains("RETURNING")
}

/// `n` placeholders for an `IN (…)` list: `?, ?, ?`.
pub fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Placeholders for a multi-row `VALUES` of `columns` each: `(?, ?), (?, ?)`.
pub fn value_rows(columns: usize, rows: usize) -> String {
    vec![format!("({})", marks(columns)); rows].join(", ")
}

/// `?` placeholders as PostgreSQL's `$1, $2, …`; a `?` inside a quoted string or
/// identifier is left alone.
pub fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut n, mut quote) = (0, None::<char>);
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Runs `body` in the writer's transaction and rolls it back whatever it returns: a dry
/// run sees exactly what the real one would, and changes nothing.
pub async fn rehearse_in_writer<S: Sql + ?Sized, T>(
    db: &S,
    body: impl AsyncFnOnce() -> Result<T, DbError>,
) -> Result<T, DbError> {
    db.begin_writer().await?;
    let result = body().await;
    db.exec("ROLLBACK", &[]).await?;
    result
}

/// Runs a future to completion on this thread (the native `Sql`s complete at once). A
/// future that is pending parks the thread until its waker is called, rather than polling
/// it again in a loop.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    #[test]
    fn the_writer_lock_statement_names_the_lock() {
        assert_eq!(
            super::PG_BEGIN_WRITER[2],
            format!("SELECT pg_advisory_xact_lock({})", super::PG_WRITER_LOCK)
        );
        assert!(super::returns_rows("SELECT 1") && super::returns_rows("INSERT INTO t VALUES (1) RETURNING id"));
        assert!(!super::returns_rows(" DELETE FROM t"));
    }

    /// Pending until another thread wakes it 50 ms later; counts its polls.
    struct WokenLater {
        polls: usize,
        done: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Future for WokenLater {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.done.load(std::sync::atomic::Ordering::SeqCst) {
                return Poll::Ready(self.polls);
            }
            if self.polls == 1 {
                let (waker, done) = (cx.waker().clone(), self.done.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    waker.wake();
                });
            }
            Poll::Pending
        }
    }

    #[test]
    fn block_on_sleeps_until_woken() {
        let polls = super::block_on(WokenLater {
            polls: 0,
            done: Default::default(),
        });
        // Polled once, then again when woken (a spurious unpark may add one): a loop that
        // polls while pending would count thousands here.
        assert!((2..=3).contains(&polls), "{polls} polls");
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(super::marks(3), "?, ?, ?");
        assert_eq!(super::value_rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(super::value_rows(2, 0), "");
    }

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            super::numbered_placeholders("SELECT '?', \"a?\" FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT '?', \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
        );
    }
}
