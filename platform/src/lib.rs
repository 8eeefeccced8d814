//! What every pipetrail component needs from Spin, in one place: the store (SQLite or
//! PostgreSQL) as a `pipetrail_core::sql::Sql`, variables, bounded request bodies, JSON
//! responses, randomness and API authentication. Components stay thin routers over core.

use http::{HeaderMap, Response, StatusCode};
use pipetrail_core::encoding::ct_eq;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sql::{DbError, Dialect, PG_BEGIN_WRITER, Row, Sql, Val, numbered_placeholders, returns_rows};
use pipetrail_core::store::{self, TokenRecord};
use serde_json::{Value, json};
use spin_sdk::sqlite::{self, Connection};

pub use spin_sdk::http::Request;

mod auth;
pub use auth::{admit, admit_body};

/// GitLab's own limit for webhook bodies.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// The store: Spin's default SQLite database, or PostgreSQL when the `database_url`
/// variable names one (its host must be in the component's `allowed_outbound_hosts`).
pub enum Db {
    Sqlite(Connection),
    Postgres {
        conn: spin_sdk::pg::Connection,
        changes: std::cell::Cell<u64>,
    },
}

/// What an instance learns of its store once: Spin reuses an instance for many requests,
/// and these never change while it lives (the schema only moves forward; whether the
/// database is a file; a key generated and stored once). A fresh instance reads them
/// again, so nothing depends on reuse; a reused one saves three statements a request and
/// the signing key's parse.
struct InstanceKnowledge {
    schema_current: std::cell::Cell<bool>,
    ephemeral: std::cell::Cell<Option<bool>>,
    generated_key: std::cell::RefCell<Option<String>>,
    parsed_signer: std::cell::RefCell<Option<(String, NoteSigner)>>,
}

thread_local! {
    static INSTANCE: InstanceKnowledge = const {
        InstanceKnowledge {
            schema_current: std::cell::Cell::new(false),
            ephemeral: std::cell::Cell::new(None),
            generated_key: std::cell::RefCell::new(None),
            parsed_signer: std::cell::RefCell::new(None),
        }
    };
}

impl Db {
    /// Opens the store and brings its schema up to date.
    pub async fn open() -> Result<Db, DbError> {
        let db = match var("database_url").await {
            Some(url) => Db::Postgres {
                conn: spin_sdk::pg::Connection::open(url).await.map_err(pg_error)?,
                changes: std::cell::Cell::new(0),
            },
            None => Db::Sqlite(Connection::open_default().await.map_err(db_error)?),
        };
        if let Db::Sqlite(_) = &db {
            // Every connection starts at SQLite's FULL; NORMAL only when the operator chose
            // it (a bad value is named on /healthz and read as FULL, the safe side).
            let chosen = var("sqlite_synchronous").await.unwrap_or_default();
            if let Ok(pipetrail_core::config::Synchronous::Normal) = pipetrail_core::config::Synchronous::parse(&chosen)
            {
                db.exec(pipetrail_core::config::Synchronous::Normal.pragma(), &[])
                    .await?;
            }
        }
        if let Db::Postgres { conn, .. } = &db {
            // Spin pools PostgreSQL connections and recycles them without a rollback: a
            // connection whose last user trapped between BEGIN and COMMIT comes back still
            // inside that transaction. End it before doing anything (a no-op otherwise).
            conn.execute("ROLLBACK", Vec::new()).await.map_err(pg_error)?;
        }
        if !INSTANCE.with(|i| i.schema_current.get()) {
            store::migrate(&db).await?;
            INSTANCE.with(|i| i.schema_current.set(true));
        }
        Ok(db)
    }

    /// Whether the store forgets everything when the process ends: Spin's default SQLite
    /// database is in memory when the app does not run from a local directory (a registry
    /// reference, SpinKube without a runtime config). Acknowledging a delivery into it
    /// would be a lie, so ingest refuses and `/healthz` says `misconfigured`.
    pub async fn is_ephemeral(&self) -> Result<bool, DbError> {
        match self {
            Db::Postgres { .. } => Ok(false),
            Db::Sqlite(_) => {
                if let Some(known) = INSTANCE.with(|i| i.ephemeral.get()) {
                    return Ok(known);
                }
                // `PRAGMA database_list` names the main database's file; "" is in memory.
                let rows = self.query("PRAGMA database_list", &[]).await?;
                let main_file = rows
                    .iter()
                    .find(|r| matches!(r.get(1), Some(Val::Text(n)) if n == "main"))
                    .and_then(|r| match r.get(2) {
                        Some(Val::Text(f)) => Some(f.clone()),
                        _ => None,
                    });
                let ephemeral = main_file.is_none_or(|f| f.is_empty());
                INSTANCE.with(|i| i.ephemeral.set(Some(ephemeral)));
                Ok(ephemeral)
            }
        }
    }
}

/// Why this deployment must not acknowledge deliveries, if it must not: an in-memory
/// database without the operator's explicit `allow_ephemeral_storage = "true"`.
pub async fn storage_refusal(db: &Db) -> Result<Option<&'static str>, DbError> {
    if db.is_ephemeral().await? && var("allow_ephemeral_storage").await.as_deref() != Some("true") {
        return Ok(Some(
            "the database is in memory (Spin's default when the app does not run from a local directory): \
             everything would be lost at restart. Give the app a database with a runtime config \
             (docs/OPERATIONS.md), or set allow_ephemeral_storage=true for a try-out",
        ));
    }
    Ok(None)
}

fn db_error(e: sqlite::Error) -> DbError {
    match e {
        sqlite::Error::DatabaseFull => DbError::Full("the database is full".into()),
        sqlite::Error::Io(m) if m.contains("full") => DbError::Full(m),
        sqlite::Error::Io(m) if m.contains("readonly") || m.contains("read-only") => DbError::ReadOnly(m),
        sqlite::Error::Io(m) if m.contains("database is locked") || m.contains("database is busy") => DbError::Busy(m),
        sqlite::Error::Io(m) if m.contains("disk I/O error") => DbError::Io(m),
        sqlite::Error::Io(m) => DbError::Other(m),
        other => DbError::Other(format!("{other:?}")),
    }
}

fn pg_error(e: impl Into<spin_sdk::pg::Error>) -> DbError {
    use spin_sdk::pg::{Error, PgError, QueryError};
    match e.into() {
        Error::PgError(PgError::QueryFailed(QueryError::DbError(d)))
            if pipetrail_core::sql::pg_code_is_full(&d.code) =>
        {
            DbError::Full(format!("{}: {}", d.code, d.message))
        }
        Error::PgError(PgError::QueryFailed(QueryError::DbError(d)))
            if pipetrail_core::sql::pg_code_is_busy(&d.code) =>
        {
            DbError::Busy(format!("{}: {}", d.code, d.message))
        }
        Error::PgError(PgError::QueryFailed(QueryError::DbError(d))) => {
            DbError::Other(format!("{}: {}", d.code, d.message))
        }
        // Connection errors may carry the address, password included: say only what kind.
        Error::PgError(PgError::ConnectionFailed(_)) => {
            DbError::Other("cannot connect to the database_url database".into())
        }
        other => DbError::Other(other.to_string()),
    }
}

impl Sql for Db {
    async fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        match self {
            Db::Sqlite(conn) => sqlite_query(conn, sql, params).await,
            Db::Postgres { conn, changes } => pg_query(conn, changes, sql, params).await,
        }
    }

    fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres { .. } => Dialect::Postgres,
        }
    }

    async fn changes(&self) -> Result<u64, DbError> {
        match self {
            Db::Sqlite(_) => pipetrail_core::sql::sqlite_changes(self).await,
            Db::Postgres { changes, .. } => Ok(changes.get()),
        }
    }

    async fn begin_writer(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(_) => self.exec("BEGIN IMMEDIATE", &[]).await,
            Db::Postgres { conn, .. } => {
                for stmt in PG_BEGIN_WRITER {
                    conn.query(stmt, Vec::new())
                        .await
                        .map_err(pg_error)?
                        .collect()
                        .await
                        .map_err(pg_error)?;
                }
                Ok(())
            }
        }
    }
}

async fn sqlite_query(conn: &Connection, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
    let params = params.iter().map(|p| match p {
        Val::Null => sqlite::Value::Null,
        Val::Int(i) => sqlite::Value::Integer(*i),
        Val::Real(r) => sqlite::Value::Real(*r),
        Val::Text(s) => sqlite::Value::Text(s.clone()),
        Val::Blob(b) => sqlite::Value::Blob(b.clone()),
    });
    let result = conn.execute(sql, params).await.map_err(db_error)?;
    let rows = result.collect().await.map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            r.values
                .into_iter()
                .map(|v| match v {
                    sqlite::Value::Null => Val::Null,
                    sqlite::Value::Integer(i) => Val::Int(i),
                    sqlite::Value::Real(r) => Val::Real(r),
                    sqlite::Value::Text(s) => Val::Text(s),
                    sqlite::Value::Blob(b) => Val::Blob(b),
                })
                .collect()
        })
        .collect())
}

/// PostgreSQL by the rules in core's `sql.rs`: numbered placeholders, booleans as 0/1,
/// changed rows counted here.
async fn pg_query(
    conn: &spin_sdk::pg::Connection,
    changes: &std::cell::Cell<u64>,
    sql: &str,
    params: &[Val],
) -> Result<Vec<Row>, DbError> {
    use spin_sdk::pg::{DbValue, ParameterValue};
    let sql = numbered_placeholders(sql);
    let params: Vec<ParameterValue> = params
        .iter()
        .map(|p| match p {
            Val::Null => ParameterValue::DbNull,
            Val::Int(i) => ParameterValue::Int64(*i),
            Val::Real(r) => ParameterValue::Floating64(*r),
            Val::Text(s) => ParameterValue::Str(s.clone()),
            Val::Blob(b) => ParameterValue::Binary(b.clone()),
        })
        .collect();
    if !returns_rows(&sql) {
        changes.set(conn.execute(sql, params).await.map_err(pg_error)?);
        return Ok(Vec::new());
    }
    let (_, mut stream, done) = conn.query(sql, params).await.map_err(pg_error)?.into_inner();
    let mut out = Vec::new();
    while let Some(row) = stream.next().await {
        out.push(
            row.into_iter()
                .map(|v| match v {
                    DbValue::DbNull => Ok(Val::Null),
                    DbValue::Boolean(b) => Ok(Val::Int(b.into())),
                    DbValue::Int8(i) => Ok(Val::Int(i.into())),
                    DbValue::Int16(i) => Ok(Val::Int(i.into())),
                    DbValue::Int32(i) => Ok(Val::Int(i.into())),
                    DbValue::Int64(i) => Ok(Val::Int(i)),
                    DbValue::Floating32(f) => Ok(Val::Real(f.into())),
                    DbValue::Floating64(f) => Ok(Val::Real(f)),
                    DbValue::Str(s) => Ok(Val::Text(s)),
                    DbValue::Binary(b) => Ok(Val::Blob(b)),
                    other => Err(DbError::Other(format!("unsupported column value {other:?}"))),
                })
                .collect::<Result<Row, DbError>>()?,
        );
    }
    done.await.map_err(pg_error)?;
    changes.set(out.len() as u64);
    Ok(out)
}

/// A Spin variable; `None` when unset or empty (optional variables default to "").
pub async fn var(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .await
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Comma-separated variable values, trimmed, empty entries dropped.
pub async fn var_list(name: &str) -> Vec<String> {
    var(name)
        .await
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What is wrong with the operator's variables this component can read, as
/// "variable: message" (core/src/config.rs); logged once per call.
pub async fn config_problems() -> Vec<String> {
    let mut values = Vec::new();
    for name in pipetrail_core::config::CHECKED {
        values.push((*name, var(name).await));
    }
    let problems = pipetrail_core::config::problems(values);
    for p in &problems {
        eprintln!("pipetrail: configuration: {p}");
    }
    problems
}

/// A count variable (`retention_scan_per_run`, …): its default when unset, an error naming
/// it when it does not parse, so the work it sizes is skipped rather than run at a guess.
pub async fn count_var(name: &str, default: u64) -> Result<u64, String> {
    pipetrail_core::config::count(name, var(name).await.as_deref(), default)
}

/// The `sinks` variable, parsed; an error names it.
pub async fn sinks() -> Result<Vec<pipetrail_core::sinks::Sink>, String> {
    pipetrail_core::sinks::parse(&var("sinks").await.unwrap_or_default()).map_err(|e| format!("sinks: {e}"))
}

/// The `storage_mode` variable; a bad value is reported by `config_problems`, and is read
/// as `store` here, so nothing is pruned on the strength of a typo.
pub async fn storage_mode() -> pipetrail_core::config::StorageMode {
    pipetrail_core::config::StorageMode::parse(var("storage_mode").await.as_deref())
        .unwrap_or(pipetrail_core::config::StorageMode::Store)
}

pub fn random_bytes(n: u64) -> Vec<u8> {
    spin_sdk::wasip3::random::random::get_random_bytes(n)
}

pub enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads the body, refusing more than `limit` bytes whether or not Content-Length says so.
pub async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    if let Some(len) = header(req.headers(), "content-length").and_then(|l| l.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(BodyError::TooLarge);
    }
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// An outbound GET (Spin's outbound HTTP; the host must be in `allowed_outbound_hosts`),
/// with connect and first-byte timeouts where the host supports them, and the answer's
/// body bounded by `limit`. Returns (status, headers, body).
pub async fn http_get(
    url: &str,
    headers: &[(&str, &str)],
    timeout: std::time::Duration,
    limit: usize,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    http_request(http::Method::GET, url, headers, String::new(), timeout, limit).await
}

/// As `http_get`, any method, with a body (sent with its length: receivers need not speak
/// chunked encoding).
pub async fn http_request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
    timeout: std::time::Duration,
    limit: usize,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    use http_body_util::BodyExt;
    use spin_sdk::wasip3::http::types::RequestOptions;
    let mut builder = http::Request::builder().method(method.clone()).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    if method != http::Method::GET {
        builder = builder.header("content-length", body.len());
    }
    let mut request = builder.body(body).map_err(|e| format!("bad request: {e}"))?;
    let options = RequestOptions::new();
    let nanos = Some(timeout.as_nanos() as u64);
    // A host that does not support a timeout says so; its own default then applies.
    let _ = options.set_connect_timeout(nanos);
    let _ = options.set_first_byte_timeout(nanos);
    let _ = options.set_between_bytes_timeout(nanos);
    request
        .extensions_mut()
        .insert(spin_sdk::wasip3::http_compat::RequestOptionsExtension(options));
    let response = spin_sdk::http::send(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, headers, body))
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header Spin sets (`spin-client-addr`, `spin-full-url`, …): the *last* value. Spin
/// copies the client's headers first and appends its own after them, so the first value
/// may be whatever the client sent; only the last is Spin's.
pub fn spin_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(name).iter().next_back().and_then(|v| v.to_str().ok())
}

pub fn json(status: StatusCode, body: &Value) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(format!("{body}\n"))
        .expect("static headers are valid")
}

pub fn text(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(body)
        .expect("static headers are valid")
}

/// A JSON error: `{"error": code, "message": ...}`.
pub fn error(status: StatusCode, code: &str, message: impl AsRef<str>) -> Response<String> {
    json(status, &json!({"error": code, "message": message.as_ref()}))
}

pub fn db_failure(e: &DbError) -> Response<String> {
    match e {
        DbError::Full(_) => retry_later(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_full",
            "storage is full; nothing was recorded, retry later",
        )),
        DbError::Busy(_) => retry_soon(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_busy",
            "storage is busy with other writes; nothing was recorded, retry shortly",
        )),
        DbError::Io(m) => {
            eprintln!("pipetrail: database I/O error: {m}");
            retry_later(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_io_error",
                "storage failed to read or write (is the disk full?); nothing was recorded, retry later",
            ))
        }
        DbError::ReadOnly(m) => {
            eprintln!("pipetrail: database is read-only: {m}");
            retry_later(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_read_only",
                "storage takes no writes (read-only); nothing was recorded, retry later",
            ))
        }
        DbError::Other(m) => {
            eprintln!("pipetrail: database error: {m}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                "storage failed; nothing was recorded",
            )
        }
    }
}

/// Seconds a client is asked to wait before it retries a delivery refused for want of
/// storage: long enough for an operator's alert to fire, short enough that GitLab's own
/// retry (if any) lands after it.
const RETRY_AFTER_SECS: &str = "30";

fn retry_later(r: Response<String>) -> Response<String> {
    with_retry_after(r, RETRY_AFTER_SECS)
}

/// A busy writer's lock frees in milliseconds: ask for a retry in a second.
fn retry_soon(r: Response<String>) -> Response<String> {
    with_retry_after(r, "1")
}

fn with_retry_after(mut r: Response<String>, secs: &'static str) -> Response<String> {
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(secs));
    r
}

/// The ledger's signing key: the `signing_key` variable, else a key generated once and
/// kept in the database (try-out only: whoever holds the database then holds the key).
pub async fn signer(db: &Db) -> Result<(NoteSigner, bool), DbError> {
    if let Some(text) = var("signing_key").await {
        return parsed_signer(&text)
            .map(|s| (s, true))
            .map_err(|e| DbError::Other(format!("the signing_key variable is not usable: {e}")));
    }
    let known = INSTANCE.with(|i| i.generated_key.borrow().clone());
    let stored = match known {
        Some(k) => k,
        None => match store::setting(db, "generated_signing_key").await? {
            Some(k) => k,
            None => {
                let seed: [u8; 32] = random_bytes(32)
                    .try_into()
                    .map_err(|_| DbError::Other("no randomness".into()))?;
                let fresh = NoteSigner::from_seed("pipetrail.local/log", seed).map_err(|e| DbError::Other(e.0))?;
                eprintln!(
                    "pipetrail: WARNING: no signing_key variable; generated a try-out key and stored it in the database. Set signing_key (pipetrail keygen) for production."
                );
                store::setting_or_insert(db, "generated_signing_key", &fresh.private_key_text()).await?
            }
        },
    };
    INSTANCE.with(|i| *i.generated_key.borrow_mut() = Some(stored.clone()));
    parsed_signer(&stored)
        .map(|s| (s, false))
        .map_err(|e| DbError::Other(e.0))
}

/// A key parsed once per instance for the same text (deriving the public key is ~4 % of
/// a delivery's CPU, docs/PERFORMANCE.md); another text is parsed again.
fn parsed_signer(text: &str) -> Result<NoteSigner, pipetrail_core::note::NoteError> {
    if let Some((known, signer)) = INSTANCE.with(|i| i.parsed_signer.borrow().clone())
        && known == text
    {
        return Ok(signer);
    }
    let signer = NoteSigner::parse(text)?;
    INSTANCE.with(|i| *i.parsed_signer.borrow_mut() = Some((text.to_string(), signer.clone())));
    Ok(signer)
}

/// The operator's policy for pipeline variables (`variables_allowlist`,
/// `variables_hmac_key`): applied when a webhook is accepted and again when integrated.
pub async fn variable_policy() -> pipetrail_core::sources::facts::VariablePolicy {
    pipetrail_core::sources::facts::VariablePolicy {
        allowlist: var_list("variables_allowlist").await,
        hmac_key: var("variables_hmac_key").await.map(String::into_bytes),
    }
}

/// How often to sign a checkpoint, read by core's parser (what `/healthz` checks). A bad
/// value is named in the log at every use and on `/healthz`, and checkpoints are signed at
/// the documented default meanwhile: recording never stops over how often checkpoints are
/// signed (a refused webhook is history GitLab does not send again).
pub async fn checkpoint_interval() -> i64 {
    use pipetrail_core::config;
    match config::checkpoint_interval(var("checkpoint_interval_seconds").await.as_deref()) {
        Ok(secs) => secs,
        Err(e) => {
            eprintln!(
                "pipetrail: configuration: {e}; signing at the default interval ({} s)",
                config::DEFAULT_CHECKPOINT_INTERVAL_SECS
            );
            config::DEFAULT_CHECKPOINT_INTERVAL_SECS
        }
    }
}

/// Which finding rules run and their thresholds (`findings_rules`, `findings_deleted_within`,
/// `findings_burst`). A bad value is named in the log at every use and on `/healthz`, and the
/// documented defaults run meanwhile: recording never stops over a rule's threshold.
pub async fn finding_rules() -> pipetrail_core::findings::Rules {
    use pipetrail_core::findings::Rules;
    let (rules, within, burst) = (
        var("findings_rules").await,
        var("findings_deleted_within").await,
        var("findings_burst").await,
    );
    Rules::parse(rules.as_deref(), within.as_deref(), burst.as_deref()).unwrap_or_else(|e| {
        eprintln!("pipetrail: configuration: {e}; the findings rules run with their defaults");
        Rules::default()
    })
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    Admin,
    Reader(TokenRecord),
    /// Localhost without a token, allowed only when the operator opted in.
    AnonymousLocal,
    /// A forge or shipper holding the route's shared secret (or signing with it).
    Source,
    /// Anyone: an open route.
    Anyone,
}

impl Caller {
    /// Projects this caller may see; `None` means all.
    pub fn scope(&self) -> Option<Vec<String>> {
        match self {
            Caller::Reader(t) if !t.projects.is_empty() => Some(t.projects.clone()),
            Caller::Admin | Caller::Reader(_) | Caller::AnonymousLocal => None,
            // Admitted to a route that reads no events: if one ever did, it would see none.
            Caller::Source | Caller::Anyone => Some(Vec::new()),
        }
    }
}

/// The cookie the web UI keeps the token in (HttpOnly, SameSite=Strict: set by the query
/// component's login page).
pub const SESSION_COOKIE: &str = "pipetrail_token";

/// The request's token: `Authorization: Bearer`, else GitLab's `PRIVATE-TOKEN`, else the
/// web UI's session cookie.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = header(headers, "authorization") {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    header(headers, "private-token")
        .map(str::trim)
        .or_else(|| cookie(headers, SESSION_COOKIE))
}

/// A cookie's value from the `Cookie` header(s).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Authenticates a request; `Err` is the 401 to send.
pub async fn authenticate(db: &Db, headers: &HeaderMap) -> Result<Caller, Response<String>> {
    let unauthorized = || {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API token is required (Authorization: Bearer or PRIVATE-TOKEN)",
        );
        r.headers_mut()
            .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
        r
    };
    match bearer(headers) {
        Some(token) if !token.is_empty() => {
            if let Some(admin) = var("admin_token").await
                && ct_eq(admin.as_bytes(), token.as_bytes())
            {
                return Ok(Caller::Admin);
            }
            match store::find_token(db, token).await {
                Ok(Some(rec)) => Ok(Caller::Reader(rec)),
                Ok(None) => Err(unauthorized()),
                Err(e) => Err(db_failure(&e)),
            }
        }
        _ => {
            let local = spin_header(headers, "spin-client-addr").is_some_and(is_loopback);
            if local && var("allow_anonymous_localhost").await.as_deref() == Some("true") {
                Ok(Caller::AnonymousLocal)
            } else {
                Err(unauthorized())
            }
        }
    }
}

fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
