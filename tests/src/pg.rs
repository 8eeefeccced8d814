//! Host side of `spin:postgres/postgres@4.2.0` over a real connection (`tokio-postgres`,
//! as Spin's own host uses), with Spin's semantics: the address must match the component's
//! `allowed_outbound_hosts` (`postgres://host:port`); each `open` is its own connection, so a
//! transaction lives as long as the connection resource; parameters bind with the type of
//! their variant (an `int64` binds only where PostgreSQL expects a BIGINT, as in Spin).

// The interface's error carries PostgreSQL's whole error record, as Spin's does.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use crate::host::Ctx;
use crate::spin::Spin;
use crate::spin::spin::postgres::postgres::{
    self as wit, Column, DbDataType, DbValue, Error, ParameterValue, QueryError,
};

pub struct PgConn {
    client: Arc<tokio_postgres::Client>,
}

pub struct PgBuilder {
    address: String,
}

/// SQL NULL for a parameter of any type, as Spin binds `db-null`.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(&self, _: &Type, _: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

fn param(p: ParameterValue) -> Result<Box<dyn ToSql + Sync + Send>, Error> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        ParameterValue::DbNull => Box::new(Null),
        _ => return Err(Error::BadParameter("a type pipetrail's test host does not bind".into())),
    })
}

fn query_error(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => Error::QueryFailed(QueryError::DbError(wit::DbError {
            as_text: e.to_string(),
            severity: d.severity().to_string(),
            code: d.code().code().to_string(),
            message: d.message().to_string(),
            detail: d.detail().map(str::to_string),
            extras: Vec::new(),
        })),
        None => Error::QueryFailed(QueryError::Text(e.to_string())),
    }
}

fn value(row: &tokio_postgres::Row, i: usize) -> DbValue {
    macro_rules! get {
        ($t:ty, $v:path) => {
            match row.try_get::<_, Option<$t>>(i) {
                Ok(Some(v)) => $v(v),
                Ok(None) => DbValue::DbNull,
                Err(_) => DbValue::Unsupported(Vec::new()),
            }
        };
    }
    match *row.columns()[i].type_() {
        Type::BOOL => get!(bool, DbValue::Boolean),
        Type::INT2 => get!(i16, DbValue::Int16),
        Type::INT4 => get!(i32, DbValue::Int32),
        Type::INT8 => get!(i64, DbValue::Int64),
        Type::FLOAT4 => get!(f32, DbValue::Floating32),
        Type::FLOAT8 => get!(f64, DbValue::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get!(String, DbValue::Str),
        Type::BYTEA => get!(Vec<u8>, DbValue::Binary),
        _ => DbValue::Unsupported(Vec::new()),
    }
}

fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        _ => DbDataType::Other(t.name().to_string()),
    }
}

async fn open(allowed: &[String], address: &str) -> Result<PgConn, Error> {
    let rest = address
        .strip_prefix("postgres://")
        .or_else(|| address.strip_prefix("postgresql://"))
        .ok_or_else(|| Error::ConnectionFailed("the test host takes postgres:// URLs".into()))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split(['/', '?']).next().unwrap_or("");
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(0)),
        None => (hostport, 5432),
    };
    if !crate::manifest::outbound_allowed(allowed, "postgres", host, port) {
        eprintln!("testhost: outbound postgres connection to {host}:{port} denied: not in allowed_outbound_hosts");
        return Err(Error::ConnectionFailed(format!(
            "postgres://{host}:{port} is not in allowed_outbound_hosts"
        )));
    }
    let (client, connection) = tokio_postgres::connect(address, tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::ConnectionFailed(e.to_string()))?;
    // The connection task ends when the client is dropped (the resource's drop).
    tokio::spawn(connection);
    Ok(PgConn {
        client: Arc::new(client),
    })
}

type Rows = (Vec<Column>, Vec<Vec<DbValue>>);

async fn run_query(
    client: &tokio_postgres::Client,
    statement: &str,
    params: Vec<ParameterValue>,
) -> Result<Rows, Error> {
    let params = params.into_iter().map(param).collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let stmt = client.prepare(statement).await.map_err(query_error)?;
    let columns = stmt
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            data_type: data_type(c.type_()),
        })
        .collect();
    let rows = client.query(&stmt, &refs).await.map_err(query_error)?;
    Ok((
        columns,
        rows.iter()
            .map(|r| (0..r.len()).map(|i| value(r, i)).collect())
            .collect(),
    ))
}

async fn run_execute(
    client: &tokio_postgres::Client,
    statement: &str,
    params: Vec<ParameterValue>,
) -> Result<u64, Error> {
    let params = params.into_iter().map(param).collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    client.execute(statement, &refs).await.map_err(query_error)
}

fn client_of(ctx: &mut Ctx, conn: &Resource<PgConn>) -> wasmtime::Result<Arc<tokio_postgres::Client>> {
    Ok(ctx.table.get(conn)?.client.clone())
}

/// The synchronous functions (older guests) wait on the async ones.
fn wait<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

impl wit::Host for Ctx {}

impl wit::HostConnection for Ctx {
    fn open(&mut self, address: String) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        let allowed = self.component.allowed_outbound_hosts.clone();
        Ok(match wait(open(&allowed, &address)) {
            Ok(c) => Ok(self.table.push(c)?),
            Err(e) => Err(e),
        })
    }

    fn query(
        &mut self,
        conn: Resource<PgConn>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<wit::RowSet, Error>> {
        let c = client_of(self, &conn)?;
        Ok(wait(run_query(&c, &statement, params)).map(|(columns, rows)| wit::RowSet { columns, rows }))
    }

    fn execute(
        &mut self,
        conn: Resource<PgConn>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let c = client_of(self, &conn)?;
        Ok(wait(run_execute(&c, &statement, params)))
    }

    fn drop(&mut self, conn: Resource<PgConn>) -> wasmtime::Result<()> {
        // Dropping the connection closes it; an open transaction rolls back.
        self.table.delete(conn)?;
        Ok(())
    }
}

impl wit::HostConnectionBuilder for Ctx {
    fn new(&mut self, address: String) -> wasmtime::Result<Resource<PgBuilder>> {
        Ok(self.table.push(PgBuilder { address })?)
    }

    fn set_ca_root(&mut self, _: Resource<PgBuilder>, _: String) -> wasmtime::Result<Result<(), Error>> {
        Ok(Err(Error::Other("the test host connects without TLS".into())))
    }

    fn build(&mut self, builder: Resource<PgBuilder>) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        let address = self.table.get(&builder)?.address.clone();
        wit::HostConnection::open(self, address)
    }

    fn drop(&mut self, builder: Resource<PgBuilder>) -> wasmtime::Result<()> {
        self.table.delete(builder)?;
        Ok(())
    }
}

impl<U> wit::HostConnectionWithStore<U> for Spin {
    async fn open_async(
        store: &Accessor<U, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        let allowed = store.with(|mut view| view.get().component.allowed_outbound_hosts.clone());
        let opened = open(&allowed, &address).await;
        store.with(|mut view| {
            Ok(match opened {
                Ok(c) => Ok(view.get().table.push(c)?),
                Err(e) => Err(e),
            })
        })
    }

    #[allow(clippy::type_complexity)]
    async fn query_async(
        store: &Accessor<U, Self>,
        conn: Resource<PgConn>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<(Vec<Column>, StreamReader<Vec<DbValue>>, FutureReader<Result<(), Error>>), Error>>
    {
        let c = store.with(|mut view| client_of(view.get(), &conn))?;
        let result = run_query(&c, &statement, params).await;
        match result {
            Ok((columns, rows)) => store.with(|mut access| {
                let rows = StreamReader::new(&mut access, rows)?;
                let done = FutureReader::new(&mut access, async { wasmtime::Result::<_>::Ok(Ok::<(), Error>(())) })?;
                Ok(Ok((columns, rows, done)))
            }),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn execute_async(
        store: &Accessor<U, Self>,
        conn: Resource<PgConn>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let c = store.with(|mut view| client_of(view.get(), &conn))?;
        Ok(run_execute(&c, &statement, params).await)
    }
}

impl<U> wit::HostConnectionBuilderWithStore<U> for Spin {
    async fn build_async(
        store: &Accessor<U, Self>,
        builder: Resource<PgBuilder>,
    ) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        let address = store.with(|mut view| view.get().table.get(&builder).map(|b| b.address.clone()))?;
        <Spin as wit::HostConnectionWithStore<U>>::open_async(store, address).await
    }
}
