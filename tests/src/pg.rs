//! Host side of `spin:postgres/postgres@4.2.0` as Spin 4.0 implements it
//! (`crates/factor-outbound-pg/src/client.rs`), with the same crates:
//! - every host of the address must match the component's `allowed_outbound_hosts`
//!   (checked as `host:port` with scheme `postgres`);
//! - connections come from a `deadpool-postgres` pool per address (64 at most) recycled with
//!   `RecyclingMethod::Clean`, which does *not* roll back a transaction left open: a guest
//!   that traps between BEGIN and COMMIT hands its open transaction, and the locks it holds,
//!   to the next `open` that gets that connection;
//! - TLS through `native-tls` unless the address says `sslmode=disable` (tokio-postgres'
//!   default is `prefer`, and a certificate the system does not trust fails the connection);
//! - an `open` holds one pooled connection until the resource is dropped; parameters bind
//!   with the type of their variant (an `int64` binds only where PostgreSQL expects a BIGINT).

// The interface's error carries PostgreSQL's whole error record, as Spin's does.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use crate::host::{Ctx, Shared};
use crate::spin::Spin;
use crate::spin::spin::postgres::postgres::{
    self as wit, Column, DbDataType, DbValue, Error, ParameterValue, QueryError,
};

pub struct PgConn {
    client: Arc<deadpool_postgres::Object>,
}

pub struct PgBuilder {
    address: String,
    ca_root: Option<String>,
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

fn pool(address: &str, ca_root: Option<&str>) -> Result<deadpool_postgres::Pool, Error> {
    let config: tokio_postgres::Config = address
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::ConnectionFailed(e.to_string()))?;
    let manager_config = deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Clean,
    };
    let manager = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, manager_config)
    } else {
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(pem) = ca_root {
            let cert = native_tls::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| Error::Other(format!("invalid root certificate: {e}")))?;
            builder.add_root_certificate(cert);
        }
        let tls = builder.build().map_err(|e| Error::Other(e.to_string()))?;
        deadpool_postgres::Manager::from_config(config, postgres_native_tls::MakeTlsConnector::new(tls), manager_config)
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(64)
        .build()
        .map_err(|e| Error::Other(e.to_string()))
}

async fn open(
    ctx: (crate::allowed_hosts::AllowedHosts, Arc<Shared>),
    address: &str,
    ca_root: Option<&str>,
) -> Result<PgConn, Error> {
    let (allowed, shared) = ctx;
    let config: tokio_postgres::Config = address
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::ConnectionFailed(e.to_string()))?;
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        if let tokio_postgres::config::Host::Tcp(h) = host {
            let port = ports.get(i).or(if ports.len() == 1 { ports.first() } else { None });
            let target = format!("{h}{}", port.map(|p| format!(":{p}")).unwrap_or_default());
            if !allowed.check(&target, "postgres") {
                return Err(Error::ConnectionFailed(format!(
                    "address postgres://{target} is not permitted"
                )));
            }
        }
    }
    let key = format!("{address}\u{0}{}", ca_root.unwrap_or(""));
    let pool = {
        let mut pools = shared.pg_pools.lock().map_err(|_| Error::Other("pool lock".into()))?;
        match pools.get(&key) {
            Some(p) => p.clone(),
            None => pools.entry(key).or_insert(pool(address, ca_root)?).clone(),
        }
    };
    let client = pool.get().await.map_err(|e| Error::ConnectionFailed(e.to_string()))?;
    Ok(PgConn {
        client: Arc::new(client),
    })
}

fn trap_if_asked(ctx: &Ctx, statement: &str) -> wasmtime::Result<()> {
    if ctx.shared.trap_now(statement) {
        eprintln!("testhost: injected trap at statement: {statement}");
        wasmtime::bail!("injected trap (Options::trap_on_statement)");
    }
    Ok(())
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

fn client_of(ctx: &mut Ctx, conn: &Resource<PgConn>) -> wasmtime::Result<Arc<deadpool_postgres::Object>> {
    Ok(ctx.table.get(conn)?.client.clone())
}

fn open_ctx(ctx: &Ctx) -> (crate::allowed_hosts::AllowedHosts, Arc<Shared>) {
    (ctx.component.allowed_outbound_hosts.clone(), ctx.shared.clone())
}

/// The synchronous functions (older guests) wait on the async ones.
fn wait<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

impl wit::Host for Ctx {}

impl wit::HostConnection for Ctx {
    fn open(&mut self, address: String) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        Ok(match wait(open(open_ctx(self), &address, None)) {
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
        trap_if_asked(self, &statement)?;
        let c = client_of(self, &conn)?;
        Ok(wait(run_query(&c, &statement, params)).map(|(columns, rows)| wit::RowSet { columns, rows }))
    }

    fn execute(
        &mut self,
        conn: Resource<PgConn>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        trap_if_asked(self, &statement)?;
        let c = client_of(self, &conn)?;
        Ok(wait(run_execute(&c, &statement, params)))
    }

    fn drop(&mut self, conn: Resource<PgConn>) -> wasmtime::Result<()> {
        // The connection goes back to its pool (recycled with `Clean`, transaction and all).
        self.table.delete(conn)?;
        Ok(())
    }
}

impl wit::HostConnectionBuilder for Ctx {
    fn new(&mut self, address: String) -> wasmtime::Result<Resource<PgBuilder>> {
        Ok(self.table.push(PgBuilder { address, ca_root: None })?)
    }

    fn set_ca_root(&mut self, builder: Resource<PgBuilder>, pem: String) -> wasmtime::Result<Result<(), Error>> {
        self.table.get_mut(&builder)?.ca_root = Some(pem);
        Ok(Ok(()))
    }

    fn build(&mut self, builder: Resource<PgBuilder>) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        let b = self.table.get(&builder)?;
        let (address, ca) = (b.address.clone(), b.ca_root.clone());
        Ok(match wait(open(open_ctx(self), &address, ca.as_deref())) {
            Ok(c) => Ok(self.table.push(c)?),
            Err(e) => Err(e),
        })
    }

    fn drop(&mut self, builder: Resource<PgBuilder>) -> wasmtime::Result<()> {
        self.table.delete(builder)?;
        Ok(())
    }
}

impl wit::HostConnectionWithStore for Spin {
    async fn open_async<U>(
        store: &Accessor<U, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        let ctx = store.with(|mut view| open_ctx(view.get()));
        let opened = open(ctx, &address, None).await;
        store.with(|mut view| {
            Ok(match opened {
                Ok(c) => Ok(view.get().table.push(c)?),
                Err(e) => Err(e),
            })
        })
    }

    #[allow(clippy::type_complexity)]
    async fn query_async<U>(
        store: &Accessor<U, Self>,
        conn: Resource<PgConn>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<(Vec<Column>, StreamReader<Vec<DbValue>>, FutureReader<Result<(), Error>>), Error>>
    {
        let c = store.with(|mut view| {
            trap_if_asked(view.get(), &statement)?;
            client_of(view.get(), &conn)
        })?;
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

    async fn execute_async<U>(
        store: &Accessor<U, Self>,
        conn: Resource<PgConn>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let c = store.with(|mut view| {
            trap_if_asked(view.get(), &statement)?;
            client_of(view.get(), &conn)
        })?;
        Ok(run_execute(&c, &statement, params).await)
    }
}

impl wit::HostConnectionBuilderWithStore for Spin {
    async fn build_async<U>(
        store: &Accessor<U, Self>,
        builder: Resource<PgBuilder>,
    ) -> wasmtime::Result<Result<Resource<PgConn>, Error>> {
        let (address, ca, ctx) = store.with(|mut view| -> wasmtime::Result<_> {
            let b = view.get().table.get(&builder)?;
            let (address, ca) = (b.address.clone(), b.ca_root.clone());
            Ok((address, ca, open_ctx(view.get())))
        })?;
        let opened = open(ctx, &address, ca.as_deref()).await;
        store.with(|mut view| {
            Ok(match opened {
                Ok(c) => Ok(view.get().table.push(c)?),
                Err(e) => Err(e),
            })
        })
    }
}
