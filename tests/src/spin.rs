//! Host side of `spin:sqlite@3.1.0` and `spin:variables@3.0.0` (Redis and MQTT are in
//! `outbound.rs`, PostgreSQL in `pg.rs`), with Spin's semantics:
//! a component may open only databases listed in its `sqlite_databases`; "default" is
//! `<state-dir>/sqlite_db.db` for a local app and in memory otherwise (Spin's
//! `crates/sqlite`); each `open` of a file is its own connection; statements run on
//! blocking threads; variables are those the component declares, already rendered.

use std::sync::{Arc, Mutex};

use wasmtime::component::{Accessor, FutureReader, HasData, Resource, StreamReader};

use crate::host::Ctx;

wasmtime::component::bindgen!({
    path: "wit",
    world: "pipetrail:testhost/spin-imports",
    imports: { default: trappable },
    with: {
        "spin:sqlite/sqlite.connection": SqliteConn,
        "spin:redis/redis.connection": crate::outbound::RedisConn,
        "spin:mqtt/mqtt.connection": crate::outbound::MqttConn,
        "spin:postgres/postgres.connection": crate::pg::PgConn,
        "spin:postgres/postgres.connection-builder": crate::pg::PgBuilder,
    },
});

use spin::sqlite::sqlite::{self, Error as SqlError, QueryResult, RowResult, Value};
use spin::variables::variables;

pub struct SqliteConn {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

/// The `HasData` marker for these interfaces: their state is the whole store context.
pub struct Spin;

impl HasData for Spin {
    type Data<'a> = &'a mut Ctx;
}

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<Ctx>) -> wasmtime::Result<()> {
    sqlite::add_to_linker::<Ctx, Spin>(linker, |c| c)?;
    variables::add_to_linker::<Ctx, Spin>(linker, |c| c)?;
    spin::redis::redis::add_to_linker::<Ctx, Spin>(linker, |c| c)?;
    spin::mqtt::mqtt::add_to_linker::<Ctx, Spin>(linker, |c| c)?;
    spin::postgres::postgres::add_to_linker::<Ctx, Spin>(linker, |c| c)?;
    Ok(())
}

fn open_conn(ctx: &Ctx, database: &str) -> Result<SqliteConn, SqlError> {
    if !ctx.component.sqlite_databases.iter().any(|d| d == database) {
        return Err(SqlError::AccessDenied);
    }
    if database != "default" {
        return Err(SqlError::NoSuchDatabase);
    }
    let Some(dir) = &ctx.shared.options.sqlite_dir else {
        // One in-memory database for the app, shared by every instance, gone at exit.
        let mut shared = ctx.shared.memory_db.lock().map_err(|_| SqlError::InvalidConnection)?;
        let conn = match &*shared {
            Some(c) => c.clone(),
            None => {
                let c = rusqlite::Connection::open_in_memory().map_err(|e| SqlError::Io(e.to_string()))?;
                shared.insert(Arc::new(Mutex::new(c))).clone()
            }
        };
        return Ok(SqliteConn { conn });
    };
    // rusqlite sets a 5 s busy timeout on open, as Spin's SQLite does.
    let conn = rusqlite::Connection::open(dir.join("sqlite_db.db")).map_err(|e| SqlError::Io(e.to_string()))?;
    Ok(SqliteConn {
        conn: Arc::new(Mutex::new(conn)),
    })
}

/// A trap the test asked for (`Options::trap_on_statement`), as the guest's own crash.
fn injected_trap(ctx: &Ctx, statement: &str) -> wasmtime::Result<()> {
    if ctx.shared.trap_now(statement) {
        eprintln!("testhost: injected trap at statement: {statement}");
        wasmtime::bail!("injected trap (Options::trap_on_statement)");
    }
    Ok(())
}

fn run(conn: &Mutex<rusqlite::Connection>, statement: &str, params: Vec<Value>) -> Result<QueryResult, SqlError> {
    let conn = conn.lock().map_err(|_| SqlError::InvalidConnection)?;
    let map_err = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => SqlError::DatabaseFull,
        _ => SqlError::Io(e.to_string()),
    };
    let mut stmt = conn.prepare(statement).map_err(map_err)?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let params = params.into_iter().map(|v| match v {
        Value::Integer(i) => rusqlite::types::Value::Integer(i),
        Value::Real(r) => rusqlite::types::Value::Real(r),
        Value::Text(t) => rusqlite::types::Value::Text(t),
        Value::Blob(b) => rusqlite::types::Value::Blob(b),
        Value::Null => rusqlite::types::Value::Null,
    });
    let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_err)? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(match row.get_ref(i).map_err(map_err)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(i) => Value::Integer(i),
                rusqlite::types::ValueRef::Real(r) => Value::Real(r),
                rusqlite::types::ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        out.push(RowResult { values });
    }
    Ok(QueryResult { columns, rows: out })
}

impl sqlite::Host for Ctx {}

impl sqlite::HostConnection for Ctx {
    fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<SqliteConn>, SqlError>> {
        Ok(match open_conn(self, &database) {
            Ok(c) => Ok(self.table.push(c)?),
            Err(e) => Err(e),
        })
    }

    fn execute(
        &mut self,
        conn: Resource<SqliteConn>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, SqlError>> {
        injected_trap(self, &statement)?;
        let c = self.table.get(&conn)?.conn.clone();
        Ok(tokio::task::block_in_place(|| run(&c, &statement, parameters)))
    }

    fn last_insert_rowid(&mut self, conn: Resource<SqliteConn>) -> wasmtime::Result<i64> {
        let c = self.table.get(&conn)?.conn.clone();
        let rowid = c.lock().map(|c| c.last_insert_rowid()).unwrap_or(0);
        Ok(rowid)
    }

    fn changes(&mut self, conn: Resource<SqliteConn>) -> wasmtime::Result<u64> {
        let c = self.table.get(&conn)?.conn.clone();
        let n = c.lock().map(|c| c.changes()).unwrap_or(0);
        Ok(n)
    }

    fn drop(&mut self, conn: Resource<SqliteConn>) -> wasmtime::Result<()> {
        // Dropping the last handle closes the connection; an open transaction rolls back.
        self.table.delete(conn)?;
        Ok(())
    }
}

impl sqlite::HostConnectionWithStore for Spin {
    async fn open_async<U>(
        store: &Accessor<U, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<SqliteConn>, SqlError>> {
        store.with(|mut view| {
            let ctx = view.get();
            Ok(match open_conn(ctx, &database) {
                Ok(c) => Ok(ctx.table.push(c)?),
                Err(e) => Err(e),
            })
        })
    }

    #[allow(clippy::type_complexity)]
    async fn execute_async<U>(
        store: &Accessor<U, Self>,
        conn: Resource<SqliteConn>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<(Vec<String>, StreamReader<RowResult>, FutureReader<Result<(), SqlError>>), SqlError>>
    {
        let c = store.with(|mut view| -> wasmtime::Result<_> {
            injected_trap(view.get(), &statement)?;
            Ok(view.get().table.get(&conn)?.conn.clone())
        })?;
        let result = tokio::task::spawn_blocking(move || run(&c, &statement, parameters)).await?;
        match result {
            Ok(QueryResult { columns, rows }) => store.with(|mut access| {
                let rows = StreamReader::new(&mut access, rows)?;
                let done = FutureReader::new(&mut access, async { wasmtime::Result::<_>::Ok(Ok::<(), SqlError>(())) })?;
                Ok(Ok((columns, rows, done)))
            }),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn last_insert_rowid_async<U>(
        store: &Accessor<U, Self>,
        conn: Resource<SqliteConn>,
    ) -> wasmtime::Result<i64> {
        let c = store.with(|mut view| view.get().table.get(&conn).map(|c| c.conn.clone()))?;
        let rowid = c.lock().map(|c| c.last_insert_rowid()).unwrap_or(0);
        Ok(rowid)
    }

    async fn changes_async<U>(store: &Accessor<U, Self>, conn: Resource<SqliteConn>) -> wasmtime::Result<u64> {
        let c = store.with(|mut view| view.get().table.get(&conn).map(|c| c.conn.clone()))?;
        let n = c.lock().map(|c| c.changes()).unwrap_or(0);
        Ok(n)
    }
}

impl variables::Host for Ctx {}

impl variables::HostWithStore for Spin {
    async fn get<U>(store: &Accessor<U, Self>, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        // Spin's rule for names: lowercase letters, digits and underscores, starting with a letter.
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Ok(Err(variables::Error::InvalidName(name)));
        }
        Ok(store.with(|mut view| match view.get().component.variables.get(&name) {
            Some(v) => Ok(v.clone()),
            None => Err(variables::Error::Undefined(format!("no variable for {name:?}"))),
        }))
    }
}
