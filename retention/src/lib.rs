//! The `retention` component: scheduled work, as authenticated HTTP routes any scheduler can
//! call (`pipetrail tick --every`, a CronJob; Spin's cron trigger is an optional plugin that
//! `spin up` would then require, docs/OPERATIONS.md):
//! - `POST /admin/tick`: signs a checkpoint when one is due and publishes the latest one to
//!   every witness URL (so someone other than the database's admin holds it), runs the
//!   GitLab API reconciler when it is configured, delivers, sweeps and compacts, adds
//!   PostgreSQL's coming monthly partitions, and lists configuration errors;
//! - `POST /admin/reconcile`: the reconciler alone (core/src/reconcile.rs);
//! - `POST /admin/verify`: verifies the ledger in place and records the result;
//! - `POST /admin/retention[?dry_run=true]`: one bounded retention sweep, then one bounded
//!   compaction run (also run by tick; a dry run does not compact);
//! - `POST /admin/deliver`: sink delivery from each sink's cursor (also run by tick); in
//!   `stream-only` mode, bodies every sink has acknowledged are then pruned.

use std::time::Duration;

use http::{Response, StatusCode};
use pipetrail_core::config::StorageMode;
use pipetrail_core::ingest::Settings;
use pipetrail_core::reconcile::{self, ApiResponse, Config, Fetch};
use pipetrail_core::routes::{self, Found, Handler, RetentionRoute};
use pipetrail_core::sequencer;
use pipetrail_core::sinks::{Message, Transport};
use pipetrail_core::sql::{DbError, in_writer};
use pipetrail_core::store;
use pipetrail_platform::{self as platform, Db, Request, error, json};
use serde_json::{Value, json};
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> Response<String> {
    let path = req.uri().path().to_string();
    let route = match routes::find(req.method().as_str(), &path, Handler::retention) {
        Found::Route(m) => m,
        Found::WrongMethod(_) => return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST"),
        Found::NotFound | Found::MalformedSegment(_) => {
            return error(StatusCode::NOT_FOUND, "not_found", format!("no route {path}"));
        }
    };
    let db = match Db::open().await {
        Ok(db) => db,
        Err(e) => return platform::db_failure(&e),
    };
    if let Err(refused) = platform::admit(&db, route.route.auth, req.headers()).await {
        return refused;
    }
    let dry_run = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "dry_run=true" || kv == "dry_run=1"));
    let result = match route.handler {
        RetentionRoute::Tick => tick(&db).await,
        RetentionRoute::Verify => verify(&db).await,
        RetentionRoute::Retention => retention(&db, dry_run).await,
        RetentionRoute::Deliver => deliver(&db).await,
        RetentionRoute::Reconcile => reconcile(&db).await.map(|r| {
            r.unwrap_or_else(
                || json!({"skipped": "gitlab_api_url, gitlab_api_token and gitlab_api_projects are not all set"}),
            )
        }),
    };
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => platform::db_failure(&e),
    }
}

/// Spin's outbound HTTP, Redis and MQTT, one connection per address for a batch.
struct Outbound;

impl Transport for Outbound {
    async fn send(&self, messages: &[Message]) -> Result<(), String> {
        let mut redis: Vec<(String, spin_sdk::redis::Connection)> = Vec::new();
        let mut mqtt: Vec<(String, spin_sdk::mqtt::Connection)> = Vec::new();
        for m in messages {
            match m {
                Message::Http { url, headers, body } => {
                    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let body = String::from_utf8(body.clone()).map_err(|e| e.to_string())?;
                    let (status, _, _) = platform::http_request(
                        http::Method::POST,
                        url,
                        &headers,
                        body,
                        Duration::from_secs(20),
                        1 << 20,
                    )
                    .await?;
                    if !(200..300).contains(&status) {
                        return Err(format!("{} answered {status}", url.split('?').next().unwrap_or(url)));
                    }
                }
                Message::Redis { address, command, args } => {
                    if !redis.iter().any(|(a, _)| a == address) {
                        let c = spin_sdk::redis::Connection::open(address)
                            .await
                            .map_err(|e| format!("redis: {e:?}"))?;
                        redis.push((address.clone(), c));
                    }
                    let conn = &redis.iter().find(|(a, _)| a == address).expect("opened above").1;
                    let args = args.iter().map(|a| spin_sdk::redis::RedisParameter::Binary(a.clone()));
                    match conn.execute(command, args).await {
                        Ok(_) => {}
                        // The entry id is the event's seq: Redis refuses it when an earlier
                        // delivery already added it, which is what at-least-once needs.
                        Err(spin_sdk::redis::Error::Other(e))
                            if command == "XADD" && e.contains("equal or smaller") => {}
                        Err(e) => return Err(format!("redis {command}: {e:?}")),
                    }
                }
                Message::Mqtt {
                    address,
                    username,
                    password,
                    topic,
                    payload,
                } => {
                    if !mqtt.iter().any(|(a, _)| a == address) {
                        // rumqttc (Spin's client) needs a client id and caps packets at
                        // 10 KiB unless told otherwise.
                        let nonce = pipetrail_core::encoding::hex(&platform::random_bytes(6));
                        let connect = pipetrail_core::sinks::mqtt_connect_address(address, "sink", &nonce);
                        let c = spin_sdk::mqtt::Connection::open(&connect, username, password, 30)
                            .await
                            .map_err(|e| format!("mqtt: {e:?}"))?;
                        mqtt.push((address.clone(), c));
                    }
                    let conn = &mqtt.iter().find(|(a, _)| a == address).expect("opened above").1;
                    conn.publish(topic, payload.clone(), spin_sdk::mqtt::Qos::AtLeastOnce)
                        .await
                        .map_err(|e| format!("mqtt publish: {e:?}"))?;
                }
            }
        }
        Ok(())
    }
}

/// Delivers to every sink from its cursor; in `stream-only` mode, then prunes what all of
/// them have.
async fn deliver(db: &Db) -> Result<Value, DbError> {
    let sinks = match platform::sinks().await {
        Ok(s) => s,
        Err(e) => return Ok(json!({"error": e})),
    };
    if sinks.is_empty() {
        return Ok(json!({"skipped": "no sinks are configured"}));
    }
    let batches = match platform::count_var("sink_batches_per_run", 50).await {
        Ok(n) => n as usize,
        Err(e) => return Ok(json!({"error": e})),
    };
    let now = pipetrail_core::time::now();
    let report = pipetrail_core::sinks::deliver(db, &sinks, &Outbound, &now, batches).await?;
    for d in &report {
        if let Some(e) = &d.error {
            eprintln!("pipetrail: sink {}: {e}", d.name);
        }
    }
    let pruned = if platform::storage_mode().await == StorageMode::StreamOnly {
        pipetrail_core::sinks::prune_delivered(db, &sinks, &now).await?
    } else {
        0
    };
    Ok(json!({
        "sinks": report.iter().map(|d| json!({"name": d.name, "events": d.events, "batches": d.batches, "delivered_through": d.after_seq, "error": d.error, "waiting_until": d.waiting_until})).collect::<Vec<_>>(),
        "pruned": pruned,
    }))
}

/// One bounded sweep of the `retention_policies` (core/src/retention.rs), then one bounded
/// compaction run (core/src/compact.rs): with `compact=Nd`, and in stream-only mode, where
/// it defaults to 7 days so the database stays bounded.
async fn retention(db: &Db, dry_run: bool) -> Result<Value, DbError> {
    let text = platform::var("retention_policies").await.unwrap_or_default();
    let policies = match pipetrail_core::retention::parse(&text) {
        Ok(p) => p,
        // The variable is the operator's: say what is wrong, prune nothing.
        Err(e) => return Ok(json!({"error": format!("retention_policies: {e}"), "pruned": {}})),
    };
    let stream_only = platform::storage_mode().await == StorageMode::StreamOnly;
    let compact_days = policies.compact_days.or(stream_only.then_some(DEFAULT_COMPACT_DAYS));
    if policies.events.is_empty() && policies.delivery_days.is_none() && compact_days.is_none() {
        return Ok(json!({"skipped": "retention_policies is empty: everything is kept"}));
    }
    let max = match platform::count_var("retention_scan_per_run", 20_000).await {
        Ok(n) => n as usize,
        Err(e) => return Ok(json!({"error": e, "pruned": {}})),
    };
    let now = pipetrail_core::time::now();
    let r = pipetrail_core::retention::sweep(db, &policies, &now, dry_run, max).await?;
    let compaction = match compact_days {
        Some(days) if !dry_run => {
            // Unreadable sinks: nothing counts as delivered, so nothing is compacted.
            let delivered_below = match platform::sinks().await {
                Ok(sinks) => pipetrail_core::sinks::delivered_below(db, &sinks).await?,
                Err(_) => Some(0),
            };
            let opts = pipetrail_core::compact::Options {
                now: &now,
                days,
                delivered_below,
                stream_only,
                scan: max,
            };
            let c = pipetrail_core::compact::run(db, &policies, &opts).await?;
            json!({"after_days": days, "entries": c.compacted, "deliveries": c.deliveries, "pipelines": c.pipelines, "checkpoints": c.checkpoints, "next_seq": c.next_seq})
        }
        _ => Value::Null,
    };
    Ok(json!({
        "dry_run": dry_run,
        "pruned": r.pruned,
        "deliveries_pruned": r.deliveries_pruned,
        "scanned": r.scanned,
        "complete": r.complete,
        "compaction": compaction,
    }))
}

/// Compaction horizon in stream-only mode when `retention_policies` names none.
const DEFAULT_COMPACT_DAYS: u32 = 7;

/// Verifies the whole ledger in place (what `pipetrail verify` does with a copy) and records
/// when and with what result, for the ledger page. It proves the database agrees with
/// itself and the key; only a check against a checkpoint held elsewhere (a witness) proves
/// it was not rewritten wholesale.
async fn verify(db: &Db) -> Result<Value, DbError> {
    let (signer, _) = platform::signer(db).await?;
    let verdict = pipetrail_core::verify::verify_db(db, &signer.verifier(), None).await?;
    let now = pipetrail_core::time::now();
    let line = verdict.line();
    store::put_setting(db, "last_verified_at", &now).await?;
    store::put_setting(db, "last_verified_result", &line).await?;
    Ok(json!({"verified_at": now, "ok": matches!(verdict, pipetrail_core::verify::Verdict::Ok { .. }), "result": line}))
}

/// Batches of queued webhooks one tick integrates at most (`sequencer::BATCH` each).
const TICK_BATCHES: usize = 64;

async fn tick(db: &Db) -> Result<Value, DbError> {
    // PostgreSQL: next months' partitions exist before their first row arrives.
    store::ensure_partitions(db, &pipetrail_core::time::now()).await?;
    let (signer, _) = platform::signer(db).await?;
    let now = pipetrail_core::time::now();
    // Webhooks accepted and not yet integrated (their requests' share ran out, or the
    // writer was busy): integrated first, so the checkpoint below covers them.
    let policy = platform::variable_policy().await;
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: platform::checkpoint_interval().await,
        findings: platform::finding_rules().await,
        without_tree: false,
    };
    let (integrated, behind) = sequencer::drain(db, &settings, TICK_BATCHES).await?;
    let (queued, set_aside) = store::backlog(db).await?;
    let signed = in_writer(db, async || store::maybe_checkpoint(db, &signer, &now, 0).await).await?;
    let mut witnesses = Vec::new();
    if let Some(cp) = store::latest_checkpoint(db).await? {
        for url in platform::var_list("witness_urls").await {
            witnesses.push(publish(&url, &cp.note).await);
        }
    }
    Ok(json!({
        "config_errors": platform::config_problems().await,
        "integrate": {
            "deliveries": integrated.outcomes.len(),
            "events": integrated.events(),
            "set_aside": integrated.set_aside,
            "queued": queued,
            "inbox_set_aside": set_aside,
            "more": behind,
        },
        "checkpoint": signed.map(|cp| json!({"size": cp.size, "signed_at": cp.signed_at})),
        "witnesses": witnesses,
        "reconcile": reconcile(db).await?,
        "github_audit": github_audit(db).await?,
        "deliver": deliver(db).await?,
        "retention": retention(db, false).await?,
    }))
}

/// A forge's REST API through Spin's outbound HTTP, with the headers that authenticate
/// the caller (GitLab's `PRIVATE-TOKEN`, GitHub's bearer token and API version).
struct ForgeApi {
    headers: Vec<(&'static str, String)>,
}

impl ForgeApi {
    fn gitlab(token: String) -> Self {
        ForgeApi {
            headers: vec![("PRIVATE-TOKEN", token), ("Accept", "application/json".into())],
        }
    }

    fn github(token: &str) -> Self {
        ForgeApi {
            headers: vec![
                ("Authorization", format!("Bearer {token}")),
                ("Accept", "application/vnd.github+json".into()),
                ("X-GitHub-Api-Version", "2022-11-28".into()),
                ("User-Agent", "pipetrail".into()),
            ],
        }
    }
}

impl Fetch for ForgeApi {
    async fn get(&self, url: &str) -> Result<ApiResponse, String> {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, headers, body) = platform::http_get(url, &headers, Duration::from_secs(20), 32 << 20).await?;
        Ok(ApiResponse { status, headers, body })
    }
}

/// One bounded reconciler run; `None` when it is not configured.
async fn reconcile(db: &Db) -> Result<Option<Value>, DbError> {
    let (Some(api_url), Some(token)) = (
        platform::var("gitlab_api_url").await,
        platform::var("gitlab_api_token").await,
    ) else {
        return Ok(None);
    };
    // A bad project list, count or start time: say so and fetch nothing.
    for name in ["gitlab_api_projects", "reconcile_since"] {
        if let Some(v) = platform::var(name).await
            && let Err(e) = pipetrail_core::config::check(name, &v)
        {
            return Ok(Some(json!({"error": format!("{name}: {e}")})));
        }
    }
    let projects: Vec<u64> = platform::var_list("gitlab_api_projects")
        .await
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    if projects.is_empty() {
        return Ok(None);
    }
    let max_requests = match platform::count_var("reconcile_max_requests", 50).await {
        Ok(n) => n as usize,
        Err(e) => return Ok(Some(json!({"error": e}))),
    };
    let cfg = Config {
        api_url,
        projects,
        max_requests,
        since: platform::var("reconcile_since").await,
    };
    let interval = platform::checkpoint_interval().await;
    let (signer, _) = platform::signer(db).await?;
    let settings = Settings {
        findings: platform::finding_rules().await,
        ..Settings::without_variables(&signer, interval)
    };
    let report = reconcile::run(
        db,
        &ForgeApi::gitlab(token),
        &cfg,
        &pipetrail_core::time::now(),
        &settings,
    )
    .await?;
    if let Some(e) = &report.error {
        eprintln!("pipetrail: reconciler: {e}");
    }
    Ok(Some(report.to_json()))
}

/// One bounded poll of GitHub's audit log; `None` when it is not configured (a token and an
/// organisation or an enterprise).
async fn github_audit(db: &Db) -> Result<Option<Value>, DbError> {
    use pipetrail_core::sources::github_audit::poll::{self, Scope};
    let Some(token) = platform::var("github_audit_token").await else {
        return Ok(None);
    };
    let scope = match (
        platform::var("github_audit_org").await,
        platform::var("github_audit_enterprise").await,
    ) {
        (Some(org), None) => Scope::Org(org),
        (None, Some(enterprise)) => Scope::Enterprise(enterprise),
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Ok(Some(
                json!({"error": "set github_audit_org or github_audit_enterprise, not both"}),
            ));
        }
    };
    let max_requests = match platform::count_var("github_audit_max_requests", 10).await {
        Ok(n) => n as usize,
        Err(e) => return Ok(Some(json!({"error": e}))),
    };
    let cfg = poll::Config {
        api_url: platform::var("github_api_url")
            .await
            .unwrap_or_else(|| "https://api.github.com".into()),
        scope,
        max_requests,
        instance: platform::var("github_instance")
            .await
            .unwrap_or_else(|| "github.com".into()),
    };
    let interval = platform::checkpoint_interval().await;
    let (signer, _) = platform::signer(db).await?;
    let settings = Settings {
        findings: platform::finding_rules().await,
        ..Settings::without_variables(&signer, interval)
    };
    let report = poll::run(
        db,
        &ForgeApi::github(&token),
        &cfg,
        &pipetrail_core::time::now(),
        &settings,
    )
    .await?;
    if let Some(e) = &report.error {
        eprintln!("pipetrail: GitHub audit log: {e}");
    }
    Ok(Some(report.to_json()))
}

/// POSTs a signed checkpoint (text/plain) to one witness. Its host must be listed in the
/// component's `allowed_outbound_hosts`, or Spin refuses the request.
async fn publish(url: &str, note: &str) -> Value {
    let request = match http::Request::post(url)
        .header("content-type", "text/plain; charset=utf-8")
        // A length, not chunks: a witness need not speak chunked encoding.
        .header("content-length", note.len())
        .body(note.to_string())
    {
        Ok(r) => r,
        Err(e) => return json!({"url": url, "ok": false, "error": format!("bad URL: {e}")}),
    };
    match spin_sdk::http::send(request).await {
        Ok(res) if res.status().is_success() => json!({"url": url, "ok": true, "status": res.status().as_u16()}),
        Ok(res) => json!({"url": url, "ok": false, "status": res.status().as_u16()}),
        Err(e) => {
            eprintln!("pipetrail: publishing the checkpoint to {url} failed: {e}");
            json!({"url": url, "ok": false, "error": e.to_string()})
        }
    }
}
