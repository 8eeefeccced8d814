//! `pipetrail-testhost --listen 127.0.0.1:3000 --state-dir .spin`: serves the app described
//! by spin.toml like `spin up`: variables from `SPIN_VARIABLE_<NAME>` or a `.env` file in the
//! working directory, instances reused as Spin reuses them.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Serve pipetrail's components under wasmtime with Spin's interfaces (a stand-in for `spin up`).")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Where the default SQLite database lives (sqlite_db.db), like Spin's .spin directory.
    #[arg(long, default_value = ".spin")]
    state_dir: PathBuf,
    /// Keep the default SQLite database in memory, as Spin does for an app that does not
    /// come from a local directory (a registry, SpinKube without runtime config).
    #[arg(long)]
    sqlite_in_memory: bool,
    /// The application manifest.
    #[arg(long, default_value = "spin.toml")]
    manifest: PathBuf,
    /// Requests one instance serves before it is dropped (Spin's flag; 128 for WASIp3).
    #[arg(long, default_value_t = 128)]
    max_instance_reuse_count: usize,
    /// Requests one instance serves at once (Spin's flag; 16 for WASIp3).
    #[arg(long, default_value_t = 16)]
    max_instance_concurrent_reuse_count: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut options = pipetrail_testhost::Options::spin_defaults(&args.state_dir);
    options.max_instance_reuse_count = args.max_instance_reuse_count;
    options.max_instance_concurrent_reuse_count = args.max_instance_concurrent_reuse_count;
    if args.sqlite_in_memory {
        options.sqlite_dir = None;
    }
    let provider = pipetrail_testhost::manifest::env_provider(std::path::Path::new(".env"))?;
    let host = pipetrail_testhost::Host::with_options(&args.manifest, options, &provider)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("Serving http://{}", listener.local_addr()?);
    pipetrail_testhost::serve(Arc::new(host), listener).await
}
