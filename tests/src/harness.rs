//! What tests and benchmarks need to run the app in-process: build the components, start a
//! host on an ephemeral port in the background, stop it when done.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, ensure};

pub const COMPONENTS: [&str; 3] = ["pipetrail-ingest", "pipetrail-query", "pipetrail-retention"];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test host lives in the workspace")
        .to_path_buf()
}

/// Runs `cargo` in the workspace (the same cargo that runs us, when there is one).
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(args)
        .status()?;
    ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// `cargo build --release --target wasm32-wasip2` of the three components, plus `extra` args.
pub fn build_components(extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["build", "--release", "--target", "wasm32-wasip2"];
    for c in COMPONENTS {
        args.extend(["-p", c]);
    }
    args.extend(extra);
    cargo(&args)
}

/// A host serving on 127.0.0.1 from its own thread and runtime; dropping it stops it.
pub struct Background {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the app of `manifest` with `vars` as its application variables, Spin's defaults.
pub fn spawn(manifest: &Path, state_dir: &Path, vars: Vec<(String, String)>) -> anyhow::Result<Background> {
    spawn_with(manifest, crate::Options::spin_defaults(state_dir), vars)
}

/// As `spawn`, with the host's options (reuse, in-memory SQLite, fault injection).
pub fn spawn_with(manifest: &Path, options: crate::Options, vars: Vec<(String, String)>) -> anyhow::Result<Background> {
    let manifest = manifest.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let started = (|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let provider = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let host = Arc::new(crate::Host::with_options(&manifest, options, &provider)?);
            let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            Ok::<_, anyhow::Error>((rt, host, listener))
        })();
        match started {
            Ok((rt, host, listener)) => {
                let _ = ready_tx.send(listener.local_addr().map_err(anyhow::Error::from));
                rt.block_on(async {
                    tokio::select! {
                        _ = crate::serve(host, listener) => {}
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_background();
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    let addr = ready_rx.recv().context("the host thread ended before it started")??;
    Ok(Background {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// A `pipetrail-testhost` process, killed (SIGKILL) and reaped when dropped.
pub struct Running {
    pub child: std::process::Child,
    pub base: String,
    pub log: PathBuf,
}

impl Running {
    /// The most resident memory the process has had (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the test host binary (built by `cargo build --release`) as a user would
/// (`SPIN_VARIABLE_*` from `env`), state in `dir/state`, its log in `dir/host.log`, on a
/// free port; waits until it serves.
pub fn spawn_process(dir: &Path, manifest: Option<&Path>, env: &[(&str, &str)]) -> anyhow::Result<Running> {
    use std::process::{Command, Stdio};
    let root = workspace_root();
    let log = dir.join("host.log");
    let mut cmd = Command::new(root.join("target/release/pipetrail-testhost"));
    cmd.current_dir(&root)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::from(std::fs::File::create(dir.join("host.out"))?))
        .stderr(Stdio::from(std::fs::File::create(&log)?));
    if let Some(m) = manifest {
        cmd.arg("--manifest").arg(m);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // In the guard at once, so a failed start still kills and reaps the process.
    let mut running = Running {
        child: cmd.spawn().context("starting target/release/pipetrail-testhost")?,
        base: String::new(),
        log,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(&running.log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("Serving http://")) {
            running.base = line.trim_start_matches("Serving ").to_string();
            return Ok(running);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "host did not start: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The median of a benchmark's samples (the middle one; the upper middle of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
