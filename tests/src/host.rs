//! Runs the app: loads `spin.toml`, compiles each component once, and serves HTTP with a
//! fresh component instance per request, as Spin does.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::manifest::{App, ComponentConfig, outbound_allowed};

pub struct Ctx {
    pub memory: LinearMemory,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: Hooks,
    pub component: Arc<ComponentConfig>,
    pub state_dir: Arc<PathBuf>,
}

/// The linear memory an instance has grown to (all its memories together): what a
/// component costs the host, whatever the request made it do.
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

/// The most linear memory any instance serving `path` has used in this process (tests
/// read it to show a component's memory is bounded).
pub fn peak_linear_memory(path: &str) -> Option<usize> {
    PEAKS.lock().ok()?.get(path).copied()
}

pub struct Hooks {
    allowed: Vec<String>,
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send> {
        let _ = fut;
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        let host = uri.host().unwrap_or("").to_string();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !outbound_allowed(&self.allowed, &scheme, &host, port) {
            eprintln!("testhost: outbound request to {scheme}://{host}:{port} denied: not in allowed_outbound_hosts");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
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

struct Loaded {
    config: Arc<ComponentConfig>,
    pre: ServicePre<Ctx>,
}

pub struct Host {
    app: App,
    components: HashMap<String, Loaded>,
    state_dir: Arc<PathBuf>,
}

impl Host {
    pub fn new(manifest: &Path, state_dir: &Path, provider: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Host> {
        let app = App::load(manifest, provider)?;
        std::fs::create_dir_all(state_dir)?;
        let mut linker: Linker<Ctx> = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::spin::add_to_linker(&mut linker)?;
        let mut components = HashMap::new();
        for (id, config) in &app.components {
            let component = load_component(&config.source)?;
            let pre = ServicePre::new(
                linker
                    .instantiate_pre(&component)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("linking component {id}"))?,
            )?;
            components.insert(
                id.clone(),
                Loaded {
                    config: Arc::new(config.clone()),
                    pre,
                },
            );
        }
        Ok(Host {
            app,
            components,
            state_dir: Arc::new(state_dir.to_path_buf()),
        })
    }

    /// Handles one request: route, fresh instance, call, collect the response.
    pub async fn handle(
        &self,
        req: http::Request<Incoming>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let Some((config, route)) = self.app.route(&path) else {
            return plain(404, "Not Found");
        };
        let loaded = &self.components[&config.id];
        match self.call(loaded, req, &route, client, local).await {
            Ok(res) => res,
            Err(e) => {
                eprintln!("testhost: component {} failed: {e:?}", config.id);
                plain(500, "Internal Server Error")
            }
        }
    }

    async fn call(
        &self,
        loaded: &Loaded,
        req: http::Request<Incoming>,
        route: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> anyhow::Result<http::Response<Full<Bytes>>> {
        let (mut parts, body) = req.into_parts();
        // The headers Spin adds to every request it routes to a component.
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let full_url = format!("http://{local}{path_and_query}");
        let prefix = route.trim_end_matches("/...");
        let path_info = parts.uri.path().strip_prefix(prefix).unwrap_or("").to_string();
        for (name, value) in [
            ("spin-full-url", full_url.clone()),
            ("spin-path-info", path_info),
            ("spin-matched-route", route.to_string()),
            ("spin-raw-component-route", route.to_string()),
            ("spin-component-route", prefix.to_string()),
            ("spin-base-path", "/".to_string()),
            ("spin-client-addr", client.to_string()),
        ] {
            parts.headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_str(&value)?,
            );
        }
        parts.uri = full_url.parse()?;
        let req = http::Request::from_parts(parts, body);

        let path = req.uri().path().to_string();
        let ctx = Ctx {
            memory: LinearMemory::default(),
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                allowed: loaded.config.allowed_outbound_hosts.clone(),
            },
            component: loaded.config.clone(),
            state_dir: self.state_dir.clone(),
        };
        let mut store = Store::new(engine(), ctx);
        store.limiter(|ctx| &mut ctx.memory);
        let service = loaded.pre.instantiate_async(&mut store).await?;
        let (req, io) = wasmtime_wasi_http::p3::Request::from_http(&mut store.data_mut().hooks, req);
        let result = store
            .run_concurrent(async |store| {
                let response = async {
                    let res = match service.handle(store, req).await? {
                        Ok(res) => res,
                        Err(code) => anyhow::bail!("component returned error code {code:?}"),
                    };
                    let res = store.with(|store| res.into_http(store, async { Ok(()) }))?;
                    let (parts, body) = res.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map_err(|e| anyhow::anyhow!("response body: {e:?}"))?
                        .to_bytes();
                    Ok(http::Response::from_parts(parts, Full::new(body)))
                };
                // The request body may be left unread (a 401 before reading); that is not an error.
                let (res, _io) = tokio::join!(response, io);
                res
            })
            .await??;
        let used = store.data().memory.bytes;
        if let Ok(mut peaks) = PEAKS.lock() {
            let peak = peaks.entry(path).or_default();
            *peak = (*peak).max(used);
        }
        Ok(result)
    }
}

fn plain(status: u16, text: &'static str) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("valid response")
}

/// Serves `host` on `listener` until the process ends.
pub async fn serve(host: Arc<Host>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    loop {
        let (stream, client) = listener.accept().await?;
        let host = host.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let host = host.clone();
                async move { Ok::<_, std::convert::Infallible>(host.handle(req, client, local).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
