//! `pipetrail-testhost --listen 127.0.0.1:3000 --state-dir .spin`: serves the app described
//! by spin.toml like `spin up`, reading variables from `SPIN_VARIABLE_<NAME>`.

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
    /// The application manifest.
    #[arg(long, default_value = "spin.toml")]
    manifest: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let host = pipetrail_testhost::Host::new(&args.manifest, &args.state_dir, &|name| {
        std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())).ok()
    })?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("Serving http://{}", listener.local_addr()?);
    pipetrail_testhost::serve(Arc::new(host), listener).await
}
