//! `pipetrail`: the native tool beside the Spin app. Offline ledger verification, signing
//! key generation, API tokens, a log shipper, and GitLab backfill and webhook set-up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

mod bench;
mod demo;
mod gitlab;
mod shiplogs;
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
    about = "pipetrail's native tool: verify a ledger offline, make a signing key, create API tokens, ship GitLab's logs, backfill from and connect to GitLab."
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
        #[arg(long, required_unless_present_any = ["bundle", "postgres"], conflicts_with_all = ["bundle", "postgres"])]
        db: Option<PathBuf>,
        /// Verify the PostgreSQL ledger (`database_url`) in place, in read-only transactions.
        /// Its URL (it may hold a password) comes from --database-url-file (0600) or
        /// PIPETRAIL_DATABASE_URL, never the command line.
        #[arg(long, conflicts_with = "bundle")]
        postgres: bool,
        #[arg(long, requires = "postgres")]
        database_url_file: Option<PathBuf>,
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
    /// Export events: as CSV or JSON Lines (every matching event, streamed to the file), or
    /// as a bundle (events with inclusion proofs and the signed checkpoint, for an auditor to
    /// check with `pipetrail verify --bundle` and the verifier key alone).
    ///
    /// Examples:
    ///   pipetrail export --url http://127.0.0.1:3000 --token-file reader.txt --format csv --filter actor=dora --filter since=2026-11-16T00:00:00Z --out dora.csv
    ///   pipetrail export --url http://127.0.0.1:3000 --token-file reader.txt --filter pipeline=31 --out pipeline-31.json
    Export {
        /// The app's base URL.
        #[arg(long)]
        url: String,
        /// csv, jsonl or bundle.
        #[arg(long, default_value = "bundle", value_parser = ["csv", "jsonl", "bundle"])]
        format: String,
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
        /// Instead: database growth over this many windows of --pipelines each, with and
        /// without a retention sweep after each window.
        #[arg(long)]
        retention_windows: Option<u64>,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Follow GitLab's JSON logs and post their lines to the app (POST /ingest/gitlab-logs),
    /// for installs without Fluent Bit or Vector (docs/SOURCES.md has their configs).
    ///
    /// Resumes from offsets kept in --state after a restart, follows rotation and
    /// truncation, and moves an offset only once the app acknowledged the lines.
    /// The token comes from --token-file or PIPETRAIL_LOG_TOKEN, never the command line.
    ///
    /// Example: pipetrail ship-logs /var/log/gitlab/gitlab-rails/{production_json,api_json,graphql_json}.log --url https://pipetrail.example.com --token-file /etc/pipetrail/log-token --instance gitlab.example.com
    ShipLogs {
        /// Log files to follow.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The app's base URL.
        #[arg(long)]
        url: String,
        /// File holding a token from the gitlab_log_tokens variable (0600).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Where offsets are kept between runs.
        #[arg(long, default_value = "pipetrail-ship-logs.state")]
        state: PathBuf,
        /// The GitLab host the logs come from (as in its web URLs), for pipelines no webhook has shown yet.
        #[arg(long)]
        instance: Option<String>,
        /// Lines per POST.
        #[arg(long, default_value_t = 500)]
        batch_lines: usize,
        /// Ship what is there and exit (for cron, and tests), instead of following.
        #[arg(long)]
        once: bool,
        /// How often to look for new lines when following, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Run the app's scheduled work (POST /admin/tick: checkpoint, witnesses, reconciler,
    /// sinks, retention and compaction) once, or every --every seconds: a scheduler for
    /// installs without one (a Kubernetes CronJob or systemd timer can call the route too).
    ///
    /// The admin token comes from --admin-token-file or PIPETRAIL_ADMIN_TOKEN.
    Tick {
        /// The app's base URL.
        #[arg(long)]
        url: String,
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Seconds between runs; without it, run once and exit (1 when the run failed).
        #[arg(long)]
        every: Option<u64>,
    },
    /// Send generated GitLab traffic to a running app, as GitLab would: Pipeline and Job
    /// Hooks (pipelines of 5-50 jobs on shared, group and project runners, with retries,
    /// manual plays, cancels, repeats and out-of-order arrivals) and, given the audit-stream
    /// token, pipeline deletions. The same seed sends the same traffic.
    ///
    /// The webhook secret comes from --secret-file or PIPETRAIL_WEBHOOK_SECRET; the audit
    /// stream token from --audit-token-file or PIPETRAIL_AUDIT_STREAM_TOKEN (optional).
    /// Exit 0: all sent; 1: the app refused a delivery (sending stops there); 2: it could
    /// not run.
    ///
    /// Example: PIPETRAIL_WEBHOOK_SECRET=change-me pipetrail demo --url http://127.0.0.1:3000 --pipelines 50
    Demo {
        /// The app's base URL.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 50)]
        pipelines: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Distinct projects and users the traffic spreads over.
        #[arg(long, default_value_t = 50)]
        projects: u64,
        #[arg(long, default_value_t = 40)]
        users: u64,
        #[arg(long)]
        secret_file: Option<PathBuf>,
        #[arg(long)]
        audit_token_file: Option<PathBuf>,
    },
    /// GitLab: import history, install webhooks.
    Gitlab {
        #[command(subcommand)]
        command: GitlabCommand,
    },
}

#[derive(Subcommand)]
enum GitlabCommand {
    /// Import pipelines and jobs from GitLab's API into the app (POST /ingest/gitlab-api),
    /// oldest first, saving a cursor after each pipeline so an interrupted run resumes.
    ///
    /// Facts webhooks already delivered are not recorded twice. The GitLab token (read_api)
    /// comes from --token-file or GITLAB_TOKEN; the app's admin token from
    /// --admin-token-file or PIPETRAIL_ADMIN_TOKEN.
    ///
    /// Example: pipetrail gitlab backfill --gitlab https://gitlab.example.com --token-file gl.txt --group platform --since 2026-01-01T00:00:00Z --url https://pipetrail.example.com --admin-token-file admin.txt
    Backfill {
        /// GitLab's base URL.
        #[arg(long)]
        gitlab: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A project (id or path).
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        project: Option<String>,
        /// A group (id or path): all its projects, subgroups included.
        #[arg(long)]
        group: Option<String>,
        /// Import pipelines updated after this time (ISO 8601); default: all.
        #[arg(long)]
        since: Option<String>,
        /// The app's base URL.
        #[arg(long)]
        url: String,
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Where the per-project cursor is kept.
        #[arg(long, default_value = "pipetrail-backfill.state")]
        state: PathBuf,
    },
    /// Install pipetrail's webhook (pipeline and job events, secret token) on every project
    /// of a group and its subgroups (Free tier has project hooks only). Idempotent: a hook
    /// with the same URL is kept, or fixed when its events are off. Reports each change.
    ///
    /// The GitLab token (api scope) comes from --token-file or GITLAB_TOKEN; the webhook
    /// secret from --secret-file or PIPETRAIL_WEBHOOK_SECRET.
    ///
    /// Example: pipetrail gitlab connect --url https://gitlab.example.com --token-file gl.txt --group platform --hook-url https://pipetrail.example.com/hooks/gitlab --secret-file hook-secret.txt --dry-run
    Connect {
        /// GitLab's base URL.
        #[arg(long)]
        url: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The group (id or path).
        #[arg(long)]
        group: String,
        /// pipetrail's webhook URL (…/hooks/gitlab).
        #[arg(long)]
        hook_url: String,
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Report what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
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
            postgres,
            database_url_file,
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
            let external = match checkpoint {
                Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?),
                None => None,
            };
            let verdict = if postgres {
                let url = secret(
                    database_url_file.as_deref(),
                    "PIPETRAIL_DATABASE_URL",
                    "--database-url-file",
                )?;
                // Never the URL in an error: it may hold the password.
                let conn = pipetrail_core::native_pg::PgDb::connect(&url)
                    .map_err(|_| anyhow::anyhow!("cannot connect to the PostgreSQL database"))?;
                block_on(pipetrail_core::sql::Sql::exec(
                    &conn,
                    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                    &[],
                ))
                .context("making the session read-only")?;
                block_on(verify::verify_db(&conn, &key, external.as_deref())).context("reading the database")?
            } else {
                let db = db.expect("clap requires --db without --bundle or --postgres");
                if !db.is_file() {
                    bail!("{} is not a file", db.display());
                }
                let conn = NativeDb::open_read_only(&db).context("opening the database")?;
                block_on(verify::verify_db(&conn, &key, external.as_deref())).context("reading the database")?
            };
            println!("{}", verdict.line());
            Ok(match verdict {
                Verdict::Ok { .. } => ExitCode::SUCCESS,
                Verdict::Tampered { .. } => ExitCode::from(1),
            })
        }
        Command::Export {
            url,
            format,
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
            let mut query = vec![format!("format={format}")];
            query.extend(filters.iter().map(|f| {
                let (k, v) = f.split_once('=').expect("checked above");
                format!("{k}={}", pipetrail_core::encoding::url_encode(v))
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
            if status == 200 && format != "bundle" {
                // Streamed to the file as it arrives: any size, little memory.
                let mut file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
                let bytes = std::io::copy(&mut res.body_mut().as_reader(), &mut file)
                    .with_context(|| format!("reading {endpoint}"))?;
                eprintln!("{bytes} bytes of {format} written to {}", out.display());
                return Ok(ExitCode::SUCCESS);
            }
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
        Command::ShipLogs {
            paths,
            url,
            token_file,
            state,
            instance,
            batch_lines,
            once,
            interval_ms,
        } => {
            let token = secret(token_file.as_deref(), "PIPETRAIL_LOG_TOKEN", "--token-file")?;
            shiplogs::run(&shiplogs::Options {
                paths,
                url,
                token,
                state,
                instance,
                batch_lines,
                once,
                interval: std::time::Duration::from_millis(interval_ms.max(10)),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tick {
            url,
            admin_token_file,
            every,
        } => {
            let admin = secret(
                admin_token_file.as_deref(),
                "PIPETRAIL_ADMIN_TOKEN",
                "--admin-token-file",
            )?;
            let endpoint = format!("{}/admin/tick", url.trim_end_matches('/'));
            loop {
                let ok = tick(&endpoint, &admin);
                match every {
                    Some(secs) => std::thread::sleep(std::time::Duration::from_secs(secs.max(1))),
                    None if ok => return Ok(ExitCode::SUCCESS),
                    None => return Ok(ExitCode::from(1)),
                }
            }
        }
        Command::Demo {
            url,
            pipelines,
            seed,
            projects,
            users,
            secret_file,
            audit_token_file,
        } => {
            let webhook_secret = secret(secret_file.as_deref(), "PIPETRAIL_WEBHOOK_SECRET", "--secret-file")?;
            let audit_token = match (&audit_token_file, std::env::var("PIPETRAIL_AUDIT_STREAM_TOKEN")) {
                (None, Err(_)) => None,
                _ => Some(secret(
                    audit_token_file.as_deref(),
                    "PIPETRAIL_AUDIT_STREAM_TOKEN",
                    "--audit-token-file",
                )?),
            };
            let sent = demo::run(&demo::Demo {
                url,
                webhook_secret,
                audit_token,
                seed,
                pipelines,
                mix: pipetrail_core::generate::Mix {
                    projects: projects.max(1),
                    users: users.max(1),
                    ..Default::default()
                },
            })?;
            Ok(if sent { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Gitlab {
            command:
                GitlabCommand::Backfill {
                    gitlab,
                    token_file,
                    project,
                    group,
                    since,
                    url,
                    admin_token_file,
                    state,
                },
        } => {
            let client = gitlab::Gitlab::new(&gitlab, secret(token_file.as_deref(), "GITLAB_TOKEN", "--token-file")?);
            let admin_token = secret(
                admin_token_file.as_deref(),
                "PIPETRAIL_ADMIN_TOKEN",
                "--admin-token-file",
            )?;
            if let Some(s) = &since
                && pipetrail_core::time::parse(s).is_none()
            {
                bail!("--since {s:?}: expected an ISO 8601 time such as 2026-01-01T00:00:00Z");
            }
            let projects = match (project, group) {
                (Some(p), _) => {
                    let Some(v) = client.project(&p)? else {
                        bail!("GitLab has no project {p:?} (or the token cannot see it)");
                    };
                    vec![(
                        v["id"].as_u64().context("the project has no id")?,
                        v["path_with_namespace"].as_str().unwrap_or(&p).to_string(),
                    )]
                }
                (None, Some(g)) => client.group_projects(&g)?,
                (None, None) => bail!("--project or --group is required"),
            };
            gitlab::backfill(&gitlab::Backfill {
                gitlab: client,
                app_url: url,
                admin_token,
                projects,
                since,
                state,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gitlab {
            command:
                GitlabCommand::Connect {
                    url,
                    token_file,
                    group,
                    hook_url,
                    secret_file,
                    dry_run,
                },
        } => {
            let client = gitlab::Gitlab::new(&url, secret(token_file.as_deref(), "GITLAB_TOKEN", "--token-file")?);
            let hook_secret = secret(secret_file.as_deref(), "PIPETRAIL_WEBHOOK_SECRET", "--secret-file")?;
            gitlab::connect(&gitlab::Connect {
                gitlab: client,
                group,
                hook_url,
                secret: hook_secret,
                dry_run,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            pipelines,
            dir,
            retention_windows: Some(windows),
            ..
        } => {
            bench::retention_growth(pipelines, windows.max(1), dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            pipelines, rounds, dir, ..
        } => {
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

/// A secret from a file (refused when others can read it) or an environment variable;
/// never from the command line, where `ps` and shell history would show it.
fn secret(file: Option<&Path>, env: &str, flag: &str) -> anyhow::Result<String> {
    match file {
        Some(f) => read_secret(f),
        None => match std::env::var(env) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            _ => bail!("give {flag} FILE or set {env}"),
        },
    }
}

/// One POST to /admin/tick; prints its report (one line) or the failure, and says which.
fn tick(endpoint: &str, admin: &str) -> bool {
    let res = ureq::post(endpoint)
        .header("Authorization", &format!("Bearer {admin}"))
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .send_empty();
    let stamp = pipetrail_core::time::now();
    match res {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            if r.status().is_success() {
                println!("{stamp} {}", text.trim());
                true
            } else {
                eprintln!("{stamp} pipetrail: {endpoint} answered {status}: {}", text.trim());
                false
            }
        }
        Err(e) => {
            eprintln!("{stamp} pipetrail: POST {endpoint}: {e}");
            false
        }
    }
}
