//! `pipetrail`: the native tool beside the Spin app. Offline ledger verification, signing
//! key generation, and API token creation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

mod bench;
use clap::{Parser, Subcommand};
use pipetrail_core::bundle::BundleVerdict;
use pipetrail_core::native::NativeDb;
use pipetrail_core::note::{NoteSigner, NoteVerifier};
use pipetrail_core::sql::block_on;
use pipetrail_core::verify::{self, Verdict};

#[derive(Parser)]
#[command(
    name = "pipetrail",
    version,
    about = "pipetrail's native tool: verify a ledger offline, make a signing key, create API tokens."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a copy of the ledger database against the verifier key, offline.
    ///
    /// Recomputes every leaf from its stored event, rebuilds the tree, checks each signed
    /// checkpoint and names the first bad entry. Exit 0: verified; 1: tampered or
    /// inconsistent; 2: the input could not be read.
    ///
    /// Example: pipetrail verify --db copy-of-sqlite_db.db --key "$(curl -s -H "Authorization: Bearer $T" http://127.0.0.1:3000/api/v1/key)"
    Verify {
        /// A copy of the SQLite database (Spin's .spin/sqlite_db.db). Opened read-only.
        #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
        db: Option<PathBuf>,
        /// An export bundle (`pipetrail export`): checked without any database.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The verifier key (name+hash+key), as GET /api/v1/key serves it.
        #[arg(long)]
        key: String,
        /// A signed checkpoint kept outside the database (e.g. from a witness): catches a
        /// rollback of the whole database, which the database alone cannot show.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Make an Ed25519 signing key for the ledger.
    ///
    /// Prints the verifier key; writes the signing key (the `signing_key` Spin variable's
    /// value) to FILE with mode 0600. Example:
    ///   pipetrail keygen --origin audit.example.com/pipetrail --out signing.key
    ///   SPIN_VARIABLE_SIGNING_KEY="$(cat signing.key)" spin up
    Keygen {
        /// The log's name: the checkpoint origin line and the key name (no spaces or '+').
        #[arg(long)]
        origin: String,
        /// Where to write the signing key (created 0600, never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Save an export bundle: events with inclusion proofs and the signed checkpoint, for an
    /// auditor to check with `pipetrail verify --bundle` and the verifier key alone.
    ///
    /// Example: pipetrail export --url http://127.0.0.1:3000 --token-file reader.txt --filter pipeline=31 --out pipeline-31.json
    Export {
        /// The app's base URL.
        #[arg(long)]
        url: String,
        /// File holding an API token (0600).
        #[arg(long)]
        token_file: PathBuf,
        /// Event filters as for GET /api/v1/events (repeat: --filter project=group/app --filter since=2026-01-01T00:00:00Z).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Where to write the bundle.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure the ledger's cost: ingest with the Merkle tree against the same ingest
    /// without it (durable SQLite commits, generated GitLab traffic), and `verify` against
    /// raw SHA-256 over the same bytes. Both sides of each ratio run in the same process,
    /// alternating, so machine noise hits both. Prints a Markdown table.
    Bench {
        /// Pipelines to generate (three deliveries each: pending, running, finished).
        #[arg(long, default_value_t = 400)]
        pipelines: u64,
        /// Rounds; medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Working directory for the databases (default: a new one under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a read token through the running app (POST /api/v1/tokens with the admin token).
    ///
    /// Example: pipetrail token create --url http://127.0.0.1:3000 --admin-token-file admin.txt --name ci-audit --project gitlab-org/gitlab-test
    Create {
        /// The app's base URL.
        #[arg(long)]
        url: String,
        /// File holding the admin token (the admin_token variable); never a command-line argument.
        #[arg(long)]
        admin_token_file: PathBuf,
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// Limit the token to a project (id or path); repeat for several. None: all projects.
        #[arg(long = "project")]
        projects: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pipetrail: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify {
            db,
            bundle,
            key,
            checkpoint,
        } => {
            let key = NoteVerifier::parse(&key).context("--key")?;
            if let Some(path) = bundle {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let verdict = pipetrail_core::bundle::verify(&text, &key);
                println!("{}", verdict.line());
                return Ok(match verdict {
                    BundleVerdict::Ok { .. } => ExitCode::SUCCESS,
                    BundleVerdict::Tampered { .. } => ExitCode::from(1),
                    BundleVerdict::Unreadable(_) => ExitCode::from(2),
                });
            }
            let db = db.expect("clap requires --db without --bundle");
            let external = match checkpoint {
                Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?),
                None => None,
            };
            if !db.is_file() {
                bail!("{} is not a file", db.display());
            }
            let conn = NativeDb::open_read_only(&db).context("opening the database")?;
            let verdict =
                block_on(verify::verify_db(&conn, &key, external.as_deref())).context("reading the database")?;
            println!("{}", verdict.line());
            Ok(match verdict {
                Verdict::Ok { .. } => ExitCode::SUCCESS,
                Verdict::Tampered { .. } => ExitCode::from(1),
            })
        }
        Command::Export {
            url,
            token_file,
            filters,
            out,
        } => {
            let token = read_secret(&token_file)?;
            for f in &filters {
                if !f.contains('=') {
                    bail!("--filter {f:?}: expected name=value");
                }
            }
            let mut query = vec!["format=bundle".to_string()];
            query.extend(filters.iter().map(|f| {
                let (k, v) = f.split_once('=').expect("checked above");
                format!("{k}={}", percent_encode(v))
            }));
            let endpoint = format!("{}/api/v1/export?{}", url.trim_end_matches('/'), query.join("&"));
            let mut res = ureq::get(&endpoint)
                .header("Authorization", &format!("Bearer {token}"))
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .with_context(|| format!("GET {endpoint}"))?;
            let status = res.status().as_u16();
            let text = res.body_mut().with_config().limit(1 << 32).read_to_string()?;
            if status != 200 {
                bail!("{endpoint} answered {status}: {}", text.trim());
            }
            let v: serde_json::Value = serde_json::from_str(&text).context("the bundle is not JSON")?;
            std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "{} event(s) with proofs against size {} written to {}{}",
                v["events"].as_array().map_or(0, Vec::len),
                v["tree_size"],
                out.display(),
                if v["next_cursor"].is_null() {
                    ""
                } else {
                    " (more match: add --filter cursor=<next_cursor>)"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { pipelines, rounds, dir } => {
            bench::run(pipelines, rounds.max(1), dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { origin, out } => {
            let mut seed = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
                .context("reading /dev/urandom")?;
            let signer = NoteSigner::from_seed(&origin, seed).map_err(|e| anyhow::anyhow!("{e}"))?;
            write_secret(&out, &signer.private_key_text())?;
            println!(
                "signing key written to {} (mode 0600): set it as the signing_key variable",
                out.display()
            );
            println!("verifier key: {}", signer.verifier().text());
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    url,
                    admin_token_file,
                    name,
                    projects,
                },
        } => {
            let admin = read_secret(&admin_token_file)?;
            let body = serde_json::json!({"name": name, "scope": "read", "projects": projects});
            let endpoint = format!("{}/api/v1/tokens", url.trim_end_matches('/'));
            let mut res = ureq::post(&endpoint)
                .header("Authorization", &format!("Bearer {admin}"))
                .header("Content-Type", "application/json")
                .config()
                .http_status_as_error(false)
                .build()
                .send(body.to_string())
                .with_context(|| format!("POST {endpoint}"))?;
            let status = res.status().as_u16();
            let text = res.body_mut().read_to_string()?;
            if status != 201 {
                bail!("{endpoint} answered {status}: {}", text.trim());
            }
            let v: serde_json::Value = serde_json::from_str(&text)?;
            println!("{}", v["token"].as_str().unwrap_or_default());
            eprintln!(
                "token {:?} created; it is shown once, only its hash is stored",
                v["name"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// Reads a secret file, refusing one that others can read.
fn read_secret(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{} is readable by others; chmod 600 it", path.display());
    }
    let text = std::fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(secret.to_string())
}

fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
