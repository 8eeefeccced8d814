//! `Sql` over a PostgreSQL connection (the `postgres` crate), for the native tool and the
//! store conformance tests. Components reach PostgreSQL through Spin's interface instead;
//! both follow the rules in `sql.rs`: numbered placeholders, the writer's advisory lock for
//! `begin_writer`, booleans as 0/1, changed rows counted here.

use std::cell::{Cell, RefCell};
use std::error::Error;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::sql::{
    DbError, Dialect, PG_BEGIN_WRITER, Row, Sql, Val, numbered_placeholders, pg_code_is_busy, pg_code_is_full,
    returns_rows,
};

pub struct PgDb {
    client: RefCell<postgres::Client>,
    changes: Cell<u64>,
}

fn db_err(e: postgres::Error) -> DbError {
    match e.as_db_error() {
        Some(d) if pg_code_is_full(d.code().code()) => DbError::Full(format!("{}: {}", d.code().code(), d.message())),
        Some(d) if pg_code_is_busy(d.code().code()) => DbError::Busy(format!("{}: {}", d.code().code(), d.message())),
        Some(d) => DbError::Other(format!("{}: {}", d.code().code(), d.message())),
        None => DbError::Other(e.to_string()),
    }
}

impl PgDb {
    pub fn connect(url: &str) -> Result<PgDb, DbError> {
        let client = postgres::Client::connect(url, postgres::NoTls).map_err(db_err)?;
        Ok(PgDb {
            client: RefCell::new(client),
            changes: Cell::new(0),
        })
    }

    /// A connection whose tables live in `schema` (created when missing): one schema per
    /// test, or per install sharing a database.
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<PgDb, DbError> {
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DbError::Other(format!("schema {schema:?}: letters, digits and _ only")));
        }
        let db = PgDb::connect(url)?;
        db.client
            .borrow_mut()
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
            ))
            .map_err(db_err)?;
        Ok(db)
    }
}

#[derive(Debug)]
struct Param<'a>(&'a Val);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self.0 {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Val::Real(r) => r.to_sql(ty, out),
            Val::Text(t) => t.as_str().to_sql(ty, out),
            Val::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    // The statement decides each parameter's type; `to_sql` converts or refuses.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn value(row: &postgres::Row, i: usize) -> Result<Val, DbError> {
    let e = |e: postgres::Error| DbError::Other(e.to_string());
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(e)?
            .map_or(Val::Null, |v| Val::Int(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(e)?
            .map_or(Val::Null, |v| Val::Int(v.into())),
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(e)?.map_or(Val::Null, Val::Int),
        Type::OID => row
            .try_get::<_, Option<u32>>(i)
            .map_err(e)?
            .map_or(Val::Null, |v| Val::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(e)?
            .map_or(Val::Null, |v| Val::Int(v.into())),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(e)?
            .map_or(Val::Null, |v| Val::Real(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(e)?
            .map_or(Val::Null, Val::Real),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(e)?
            .map_or(Val::Null, Val::Blob),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row
            .try_get::<_, Option<String>>(i)
            .map_err(e)?
            .map_or(Val::Null, Val::Text),
        other => return Err(DbError::Other(format!("column {i}: unsupported type {other}"))),
    })
}

impl Sql for PgDb {
    async fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        let mut client = self.client.borrow_mut();
        let sql = numbered_placeholders(sql);
        let params: Vec<Param> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        if !returns_rows(&sql) {
            let n = client.execute(sql.as_str(), &refs).map_err(db_err)?;
            self.changes.set(n);
            return Ok(Vec::new());
        }
        let rows = client.query(sql.as_str(), &refs).map_err(db_err)?;
        self.changes.set(rows.len() as u64);
        rows.iter()
            .map(|r| (0..r.len()).map(|i| value(r, i)).collect())
            .collect()
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn changes(&self) -> Result<u64, DbError> {
        Ok(self.changes.get())
    }

    async fn begin_writer(&self) -> Result<(), DbError> {
        self.client
            .borrow_mut()
            .batch_execute(&PG_BEGIN_WRITER.join("; "))
            .map_err(db_err)
    }
}
