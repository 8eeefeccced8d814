//! Runs the app as Spin 4.0 does: loads `spin.toml`, compiles each component once, and
//! hands requests to instances through `wasmtime_wasi_http::handler::ProxyHandler`, the
//! same dispatcher Spin's HTTP trigger uses (`crates/trigger-http/src/wasip3.rs`). So an
//! instance serves up to 128 requests, up to 16 at once, and is dropped after 1 s idle
//! (Spin's defaults, and its `--max-instance-reuse-count` / `--max-instance-concurrent-
//! reuse-count` flags as `Options`). A trap ends the instance and every request in it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime::component::{Accessor, Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{HandlerState, Proxy, ProxyHandler, ProxyPre, StoreBundle};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{WasiHttpCtxView, WasiHttpHooks, WasiHttpView};
use wasmtime_wasi_http::{WasiHttpCtx, p3::RequestOptions};

use crate::manifest::{App, ComponentConfig};

/// How the host runs the app: Spin's defaults unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests one instance serves before it is dropped (Spin: 128 for WASIp3).
    pub max_instance_reuse_count: usize,
    /// Requests one instance serves at once (Spin: 16 for WASIp3).
    pub max_instance_concurrent_reuse_count: usize,
    /// How long an idle instance is kept for reuse (Spin: 1 s).
    pub idle_instance_timeout: Duration,
    /// Spin's `--request-timeout` (none by default).
    pub request_timeout: Option<Duration>,
    /// Where the `default` SQLite database lives: `<dir>/sqlite_db.db` as `spin up` of a
    /// local manifest does, or `None`: in memory, as Spin does when the app does not come
    /// from a local directory (a registry, SpinKube without runtime config).
    pub sqlite_dir: Option<PathBuf>,
    /// Fault injection for tests: the host traps the guest (once) when it sends a SQL
    /// statement containing this text, as a crash or a timeout between two statements would.
    pub trap_on_statement: Option<String>,
}

impl Options {
    pub fn spin_defaults(state_dir: &Path) -> Options {
        Options {
            max_instance_reuse_count: 128,
            max_instance_concurrent_reuse_count: 16,
            idle_instance_timeout: Duration::from_secs(1),
            request_timeout: None,
            sqlite_dir: Some(state_dir.to_path_buf()),
            trap_on_statement: None,
        }
    }

    /// A fresh instance per request (Spin's behaviour for WASIp2 components); the baseline
    /// the benchmarks compare reuse against.
    pub fn no_reuse(mut self) -> Options {
        self.max_instance_reuse_count = 1;
        self.max_instance_concurrent_reuse_count = 1;
        self
    }
}

/// What the host shares among every instance of the app.
pub struct Shared {
    pub options: Options,
    /// The in-memory default database, one per app, when `sqlite_dir` is `None`.
    pub memory_db: Mutex<Option<Arc<Mutex<rusqlite::Connection>>>>,
    /// PostgreSQL pools by address, as Spin keeps them (`pg.rs`).
    pub pg_pools: Mutex<HashMap<String, deadpool_postgres::Pool>>,
    trap_armed: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Whether the guest must trap now, for a statement (fires once).
    pub fn trap_now(&self, statement: &str) -> bool {
        self.options
            .trap_on_statement
            .as_deref()
            .is_some_and(|marker| statement.contains(marker))
            && self.trap_armed.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

pub struct Ctx {
    pub memory: LinearMemory,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: Hooks,
    pub component: Arc<ComponentConfig>,
    pub shared: Arc<Shared>,
}

/// The linear memory an instance has grown to (all its memories together): what a
/// component costs the host, whatever its requests made it do.
#[derive(Default)]
pub struct LinearMemory {
    pub bytes: usize,
}

impl wasmtime::ResourceLimiter for LinearMemory {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        self.bytes += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

static PEAKS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
static STARTED: Mutex<BTreeMap<PathBuf, u64>> = Mutex::new(BTreeMap::new());

/// How many instances the app whose database lives in `dir` has started in this process
/// (tests compare it with the requests served to see reuse).
pub fn instances_started(dir: &Path) -> u64 {
    STARTED.lock().ok().and_then(|m| m.get(dir).copied()).unwrap_or(0)
}

/// The most linear memory an instance had after serving `path` in this process (tests read
/// it to show a component's memory stays bounded, reuse and concurrency included).
pub fn peak_linear_memory(path: &str) -> Option<usize> {
    PEAKS.lock().ok()?.get(path).copied()
}

pub struct Hooks {
    component: Arc<ComponentConfig>,
}

type IoFuture = Box<dyn Future<Output = Result<(), ErrorCode>> + Send>;
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, ErrorCode>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<Body>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<
        dyn Future<Output = Result<(http::Response<Body>, IoFuture), wasmtime_wasi::TrappableError<ErrorCode>>> + Send,
    > {
        let _ = fut;
        let allowed = self
            .component
            .allowed_outbound_hosts
            .check(&request.uri().to_string(), "https");
        Box::new(async move {
            if !allowed {
                return Err(ErrorCode::HttpRequestDenied.into());
            }
            let (res, io) = wasmtime_wasi_http::p3::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model_async(true);
        config.concurrency_support(true);
        Engine::new(&config).expect("engine config is valid")
    })
}

/// Compiles a component once per process, and once per content on disk: compiled
/// artifacts are cached under `target/testhost-cache` keyed by the wasm's SHA-256.
fn load_component(path: &Path) -> anyhow::Result<Component> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Component>>> = OnceLock::new();
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading component {} (build it first: cargo build --release --target wasm32-wasip2)",
            path.display()
        )
    })?;
    let key = pipetrail_core::encoding::sha256(&bytes);
    // Held while compiling: hosts started at once in one process compile each component
    // once, and never race on the cache file.
    let mut cache = CACHE.get_or_init(Default::default).lock().expect("cache lock");
    if let Some(c) = cache.get(&key) {
        return Ok(c.clone());
    }
    let dir = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|t| t.join("testhost-cache"))
        .unwrap_or_else(std::env::temp_dir);
    let file = dir.join(format!(
        "{}-{}.cwasm",
        pipetrail_core::encoding::hex(&key[..12]),
        env!("CARGO_PKG_VERSION")
    ));
    // SAFETY: the file was written by `precompile_component` of this same engine config
    // (its name carries the wasm's hash); wasmtime checks version and config on load.
    let component = match unsafe { Component::deserialize_file(engine(), &file) } {
        Ok(c) => c,
        Err(_) => {
            let compiled = engine().precompile_component(&bytes)?;
            std::fs::create_dir_all(&dir)?;
            // Other processes may compile the same component now: write aside, then rename
            // (atomic), under a name no other writer uses.
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = file.with_extension(format!("tmp{}-{n}", std::process::id()));
            std::fs::write(&tmp, &compiled)?;
            std::fs::rename(&tmp, &file)?;
            unsafe { Component::deserialize(engine(), &compiled)? }
        }
    };
    cache.insert(key, component.clone());
    Ok(component)
}

/// One component's instances, as Spin's `HttpHandlerState`.
struct ComponentState {
    config: Arc<ComponentConfig>,
    shared: Arc<Shared>,
}

impl HandlerState for ComponentState {
    type StoreData = Ctx;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<Ctx>> {
        if let (Some(dir), Ok(mut started)) = (&self.shared.options.sqlite_dir, STARTED.lock()) {
            *started.entry(dir.clone()).or_default() += 1;
        }
        let ctx = Ctx {
            memory: LinearMemory::default(),
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                component: self.config.clone(),
            },
            component: self.config.clone(),
            shared: self.shared.clone(),
        };
        let mut store = Store::new(engine(), ctx);
        store.limiter(|ctx| &mut ctx.memory);
        Ok(StoreBundle {
            store,
            write_profile: Box::new(|_| ()),
        })
    }

    fn request_timeout(&self) -> Duration {
        self.shared.options.request_timeout.unwrap_or(Duration::MAX)
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.shared.options.idle_instance_timeout
    }

    fn max_instance_reuse_count(&self) -> usize {
        self.shared.options.max_instance_reuse_count.max(1)
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.shared.options.max_instance_concurrent_reuse_count.max(1)
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        eprintln!("testhost: component {} instance ended: {error:?}", self.config.id);
    }
}

pub struct Host {
    app: App,
    handlers: HashMap<String, ProxyHandler<ComponentState>>,
    pub shared: Arc<Shared>,
}

impl Host {
    /// The app of `manifest` with Spin's defaults, its SQLite database in `state_dir`.
    pub fn new(manifest: &Path, state_dir: &Path, provider: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Host> {
        Host::with_options(manifest, Options::spin_defaults(state_dir), provider)
    }

    pub fn with_options(
        manifest: &Path,
        options: Options,
        provider: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Host> {
        let app = App::load(manifest, provider)?;
        if let Some(dir) = &options.sqlite_dir {
            std::fs::create_dir_all(dir)?;
        }
        let mut linker: Linker<Ctx> = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::spin::add_to_linker(&mut linker)?;
        let shared = Arc::new(Shared {
            options,
            memory_db: Mutex::new(None),
            pg_pools: Mutex::new(HashMap::new()),
            trap_armed: std::sync::atomic::AtomicBool::new(true),
        });
        let mut handlers = HashMap::new();
        for (id, config) in &app.components {
            let component = load_component(&config.source)?;
            let pre = ServicePre::new(
                linker
                    .instantiate_pre(&component)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("linking component {id}"))?,
            )?;
            let state = ComponentState {
                config: Arc::new(config.clone()),
                shared: shared.clone(),
            };
            handlers.insert(id.clone(), ProxyHandler::new(state, ProxyPre::P3(pre)));
        }
        Ok(Host { app, handlers, shared })
    }

    /// Handles one request: route, Spin's request preparation, an instance from the pool,
    /// the response collected.
    pub async fn handle(&self, req: http::Request<Incoming>, client: SocketAddr) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let Some((config, route)) = self.app.route(&path) else {
            return plain(404, "Not Found");
        };
        let handler = &self.handlers[&config.id];
        let req = match prepare_request(req, &route, client) {
            Ok(r) => r,
            Err(e) => {
                // Spin answers 500 itself: a header that is not UTF-8, no Host.
                eprintln!("testhost: request refused before the component: {e:#}");
                return plain(500, "Internal Server Error");
            }
        };
        match call(handler, req, path).await {
            Ok(res) => res,
            Err(e) => {
                eprintln!("testhost: component {} failed: {e:?}", config.id);
                plain(500, "Internal Server Error")
            }
        }
    }
}

/// What Spin does to a request before a component sees it (`set_req_uri`,
/// `prepare_request_headers`): an absolute URI from the `Host` header, every header
/// value UTF-8, then the client's headers followed by Spin's own, appended, so a client
/// that sends `spin-client-addr` is seen first and Spin's value after it.
fn prepare_request(
    req: http::Request<Incoming>,
    route: &str,
    client: SocketAddr,
) -> anyhow::Result<http::Request<Incoming>> {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(http::header::HOST)
        .context("no 'Host' header present in request")?
        .to_str()
        .context("'Host' header is not valid UTF-8")?
        .to_string();
    let authority: http::uri::Authority = host.parse().context("'Host' header contains an invalid authority")?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut uri = parts.uri.clone().into_parts();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    parts.uri = http::Uri::from_parts(uri)?;

    let mut headers = Vec::new();
    for (name, value) in &parts.headers {
        let value = value
            .to_str()
            .with_context(|| format!("header {name} is not valid UTF-8"))?;
        headers.push((name.clone(), http::HeaderValue::from_str(value)?));
    }
    let prefix = route.trim_end_matches("/...");
    let path_info = parts.uri.path().strip_prefix(prefix).unwrap_or("").to_string();
    for (name, value) in [
        ("spin-path-info", path_info),
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-matched-route", route.to_string()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", route.to_string()),
        ("spin-component-route", prefix.to_string()),
        ("spin-client-addr", client.to_string()),
    ] {
        headers.push((
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(&value)?,
        ));
    }
    parts.headers.clear();
    for (name, value) in headers {
        parts.headers.append(name, value);
    }
    Ok(http::Request::from_parts(parts, body))
}

type Answer = anyhow::Result<http::Response<Full<Bytes>>>;

async fn call(handler: &ProxyHandler<ComponentState>, req: http::Request<Incoming>, path: String) -> Answer {
    let req = req.map(|body| body.map_err(|e| ErrorCode::InternalError(Some(e.to_string()))));
    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(req);
    let (tx, rx) = tokio::sync::oneshot::channel::<Answer>();
    handler.spawn(
        None,
        Box::new(move |store: &Accessor<Ctx>, guest: &Proxy| {
            Box::pin(async move {
                let answer = async {
                    let Proxy::P3(guest) = guest else {
                        anyhow::bail!("pipetrail's components export wasi:http/handler@0.3");
                    };
                    let request = store.with(|mut s| s.get().table.push(request))?;
                    let response = guest.wasi_http_handler().call_handle(store, request).await?;
                    let response =
                        response.map_err(|code| anyhow::anyhow!("component returned error code {code:?}"))?;
                    let response = store.with(|mut s| s.get().table.delete(response))?;
                    let response = store.with(|mut s| response.into_http(&mut s, request_io))?;
                    let (parts, body) = response.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map_err(|e| anyhow::anyhow!("response body: {e:?}"))?
                        .to_bytes();
                    let used = store.with(|mut s| s.get().memory.bytes);
                    if let Ok(mut peaks) = PEAKS.lock() {
                        let peak = peaks.entry(path).or_default();
                        *peak = (*peak).max(used);
                    }
                    Ok(http::Response::from_parts(parts, Full::new(body)))
                }
                .await;
                let _ = tx.send(answer);
            })
        }),
    );
    // A trap drops the task (and the instance): the sender goes with it.
    rx.await
        .context("the instance ended before it answered (a trap or a timeout)")?
}

fn plain(status: u16, text: &'static str) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("valid response")
}

/// Serves `host` on `listener` until the process ends.
pub async fn serve(host: Arc<Host>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, client) = listener.accept().await?;
        let host = host.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let host = host.clone();
                async move { Ok::<_, std::convert::Infallible>(host.handle(req, client).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
