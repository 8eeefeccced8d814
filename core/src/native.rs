//! `Sql` over rusqlite, for the native tool (`pipetrail verify`) and tests. It completes
//! every call at once; drive it with `sql::block_on`.

use std::path::Path;

use crate::sql::{DbError, Row, Sql, Val};

pub struct NativeDb(pub rusqlite::Connection);

impl NativeDb {
    pub fn open(path: &Path) -> Result<NativeDb, DbError> {
        rusqlite::Connection::open(path)
            .map(NativeDb)
            .map_err(|e| DbError::Other(e.to_string()))
    }

    /// Opens an existing database without ever writing to it (verification of a copy).
    pub fn open_read_only(path: &Path) -> Result<NativeDb, DbError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        rusqlite::Connection::open_with_flags(path, flags)
            .map(NativeDb)
            .map_err(|e| DbError::Other(e.to_string()))
    }

    pub fn memory() -> NativeDb {
        NativeDb(rusqlite::Connection::open_in_memory().expect("in-memory SQLite opens"))
    }
}

impl Sql for NativeDb {
    async fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        let err = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => DbError::Full(e.to_string()),
            Some(rusqlite::ErrorCode::ReadOnly) => DbError::ReadOnly(e.to_string()),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                DbError::Busy(e.to_string())
            }
            Some(rusqlite::ErrorCode::SystemIoFailure) => DbError::Io(e.to_string()),
            _ => DbError::Other(e.to_string()),
        };
        let mut stmt = self.0.prepare(sql).map_err(err)?;
        let n = stmt.column_count();
        let params = params.iter().map(|p| match p {
            Val::Null => rusqlite::types::Value::Null,
            Val::Int(i) => rusqlite::types::Value::Integer(*i),
            Val::Real(r) => rusqlite::types::Value::Real(*r),
            Val::Text(s) => rusqlite::types::Value::Text(s.clone()),
            Val::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
        });
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match row.get_ref(i).map_err(err)? {
                    rusqlite::types::ValueRef::Null => Val::Null,
                    rusqlite::types::ValueRef::Integer(i) => Val::Int(i),
                    rusqlite::types::ValueRef::Real(r) => Val::Real(r),
                    rusqlite::types::ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    rusqlite::types::ValueRef::Blob(b) => Val::Blob(b.to_vec()),
                });
            }
            out.push(vals);
        }
        Ok(out)
    }
}

/// Every stored table a delivery or request may change, as text, except the outcome
/// counters (operational statistics). Tests compare two of these to show that a rejected
/// input changed nothing.
pub fn dump_tables(db: &NativeDb) -> Result<String, DbError> {
    let mut out = String::new();
    for (table, order) in [
        ("events", "seq"),
        ("event_bodies", "seq"),
        ("tree_nodes", "id"),
        ("checkpoints", "size"),
        ("pruned", "seq"),
        ("compacted", "start"),
        ("deliveries", "id"),
        ("delivery_bodies", "delivery"),
        ("pipelines", "instance, pipeline_id"),
        ("jobs", "instance, job_id"),
        ("tokens", "hash"),
        ("settings", "key"),
        ("sink_cursors", "name"),
    ] {
        let rows = crate::sql::block_on(db.query(&format!("SELECT * FROM {table} ORDER BY {order}"), &[]))?;
        out.push_str(&format!("{table}: {rows:?}\n"));
    }
    Ok(out)
}
