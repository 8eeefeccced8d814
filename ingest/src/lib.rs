//! The `ingest` component: behind the webhook URL. Authenticates, bounds and decodes each
//! delivery. A webhook is accepted into the inbox by one statement and integrated into the
//! ledger by whichever request holds the writer's lock (`pipetrail_core::sequencer`); the
//! other sources record in one transaction. Every 2xx is sent after the COMMIT that holds
//! the delivery.

use http::{HeaderMap, Response, StatusCode};
use pipetrail_core::ingest::{self, Delivery, GithubDelivery, GithubOutcome, IngestError, Outcome, Settings};
use pipetrail_core::note::NoteSigner;
use pipetrail_core::routes::{self, Found, Handler, IngestRoute};
use pipetrail_core::sequencer::{self, Accepted};
use pipetrail_core::sources::gitlab_hooks;
use pipetrail_core::store;
use pipetrail_platform::{self as platform, Db, Request, error, header, json};
use serde_json::json;
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> Response<String> {
    serve(req).await.unwrap_or_else(|refusal| refusal)
}

/// Finds the route, admits the caller by the route's row (before the body is read, but for
/// a body signature), reads the body (bounded), and hands it to the route's handler.
async fn serve(req: Request) -> Result<Response<String>, Refusal> {
    let path = req.uri().path().to_string();
    let route = match routes::find(req.method().as_str(), &path, Handler::ingest) {
        Found::Route(m) => m,
        Found::WrongMethod(_) => return Err(error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST")),
        Found::NotFound | Found::MalformedSegment(_) => {
            return Err(error(StatusCode::NOT_FOUND, "not_found", format!("no route {path}")));
        }
    };
    let db = open_store().await?;
    let headers = req.headers().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    if let Err(refused) = platform::admit(&db, route.route.auth, &headers).await {
        let _ = store::count_outcome(&db, "unauthorized").await;
        return Err(refused);
    }
    let body = body(&db, req).await?;
    if let Err(refused) = platform::admit_body(route.route.auth, &headers, &body).await {
        let _ = store::count_outcome(&db, "unauthorized").await;
        return Err(refused);
    }
    let request = Delivered {
        db: &db,
        headers: &headers,
        query: &query,
        body: &body,
    };
    match route.handler {
        IngestRoute::GitlabHooks => gitlab(request).await,
        IngestRoute::GitlabAuditStream => gitlab_audit(request).await,
        IngestRoute::GithubHooks => github(request).await,
        IngestRoute::GitlabLogs => gitlab_logs(request).await,
        IngestRoute::GitlabApi => gitlab_api(request).await,
        IngestRoute::GithubAuditHec | IngestRoute::GithubAuditHecEvent => github_audit_hec(request).await,
    }
}

/// An admitted request, its body read.
#[derive(Clone, Copy)]
struct Delivered<'a> {
    db: &'a Db,
    headers: &'a HeaderMap,
    query: &'a str,
    body: &'a [u8],
}

/// A response sent instead of recording (an error, or a delivery acknowledged and skipped).
type Refusal = Response<String>;

/// Opens the database, refusing with 503 when it would not keep what it is given (an
/// in-memory database the operator did not opt into): GitLab does not retry, so a 2xx
/// into memory is history lost at the next restart.
async fn open_store() -> Result<Db, Refusal> {
    let db = Db::open().await.map_err(|e| platform::db_failure(&e))?;
    match platform::storage_refusal(&db).await {
        Ok(None) => Ok(db),
        Ok(Some(why)) => {
            eprintln!("pipetrail: refusing deliveries: {why}");
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "storage_ephemeral", why))
        }
        Err(e) => Err(platform::db_failure(&e)),
    }
}

/// The body, at most 25 MB (GitLab's own limit) whether declared or streamed.
async fn body(db: &Db, req: Request) -> Result<Vec<u8>, Refusal> {
    match platform::read_body(req, platform::MAX_BODY).await {
        Ok(b) => Ok(b),
        Err(platform::BodyError::TooLarge) => {
            let _ = store::count_outcome(db, "too_large").await;
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "bodies are limited to 25 MB, as GitLab's are",
            ))
        }
        Err(platform::BodyError::Read(m)) => Err(error(StatusCode::BAD_REQUEST, "unreadable_body", m)),
    }
}

async fn ledger(db: &Db) -> Result<(NoteSigner, i64), Refusal> {
    let interval = platform::checkpoint_interval().await;
    let (signer, _) = platform::signer(db).await.map_err(|e| platform::db_failure(&e))?;
    Ok((signer, interval))
}

/// The answer to a recorded (or already recorded) delivery.
fn answered(outcome: Outcome) -> Response<String> {
    match outcome {
        Outcome::Recorded { events, first_seq } => json(
            StatusCode::OK,
            &json!({"status": "recorded", "events": events, "first_seq": first_seq}),
        ),
        Outcome::Duplicate => json(StatusCode::OK, &json!({"status": "duplicate", "events": 0})),
    }
}

/// The answer to an accepted webhook: 200 once integrated (or a replay), 202 while queued.
fn accepted(a: Accepted) -> Response<String> {
    match a {
        Accepted::Recorded { events, first_seq } => answered(Outcome::Recorded { events, first_seq }),
        Accepted::Duplicate => answered(Outcome::Duplicate),
        Accepted::Queued { id } => json(StatusCode::ACCEPTED, &json!({"status": "accepted", "queued": id})),
        Accepted::SetAside { id, reason } => json(
            StatusCode::ACCEPTED,
            &json!({"status": "set_aside", "queued": id, "reason": reason}),
        ),
    }
}

fn failed(e: IngestError) -> Refusal {
    match e {
        IngestError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_payload", m),
        IngestError::Db(e) => platform::db_failure(&e),
    }
}

/// GitLab Pipeline and Job Hooks (`X-Gitlab-Token`).
async fn gitlab(r: Delivered<'_>) -> Result<Response<String>, Refusal> {
    let db = r.db;
    let event = header(r.headers, "x-gitlab-event");
    if let Some(kind) = event
        && !gitlab_hooks::is_recorded(kind)
    {
        let _ = store::count_outcome(db, "ignored").await;
        return Ok(json(
            StatusCode::ACCEPTED,
            &json!({"status": "ignored", "reason": format!("{kind} is not recorded")}),
        ));
    }
    let idem = header(r.headers, "idempotency-key");
    let uuid = header(r.headers, "x-gitlab-event-uuid");
    let body = r.body;
    let (signer, interval) = ledger(db).await?;
    let policy = platform::variable_policy().await;
    let received_at = pipetrail_core::time::now();
    let delivery = Delivery {
        body,
        event_header: event,
        idempotency_key: idem,
        event_uuid: uuid,
        received_at: &received_at,
    };
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: interval,
        findings: platform::finding_rules().await,
        without_tree: cfg!(feature = "bench-without-tree"),
    };
    let queued = ingest::queue_gitlab_counted(db, &delivery, &policy)
        .await
        .map_err(failed)?;
    let outcome = sequencer::accept(db, &queued, &settings)
        .await
        .map_err(|e| platform::db_failure(&e))?;
    Ok(accepted(outcome))
}

/// GitHub webhooks: the body's HMAC-SHA256 under `github_webhook_secret` was checked as the
/// route's `X-Hub-Signature-256` (`platform::admit_body`) before this runs.
async fn github(r: Delivered<'_>) -> Result<Response<String>, Refusal> {
    let db = r.db;
    let event = header(r.headers, "x-github-event").unwrap_or("");
    let guid = header(r.headers, "x-github-delivery");
    let (signer, interval) = ledger(db).await?;
    // GitHub's runs carry no variables, but a batch the sequencer integrates may hold
    // queued GitLab hooks too.
    let policy = platform::variable_policy().await;
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: interval,
        findings: platform::finding_rules().await,
        without_tree: cfg!(feature = "bench-without-tree"),
    };
    let received_at = pipetrail_core::time::now();
    let delivery = GithubDelivery {
        body: r.body,
        event,
        delivery_id: guid,
        received_at: &received_at,
    };
    Ok(match ingest::queue_github(db, &delivery).await.map_err(failed)? {
        GithubOutcome::Recorded(queued) => accepted(
            sequencer::accept(db, &queued, &settings)
                .await
                .map_err(|e| platform::db_failure(&e))?,
        ),
        GithubOutcome::Ping { zen } => json(StatusCode::OK, &json!({"status": "pong", "zen": zen})),
        GithubOutcome::Ignored(event) => json(
            StatusCode::ACCEPTED,
            &json!({"status": "ignored", "reason": format!("{event} is not recorded")}),
        ),
    })
}

/// GitLab audit-event streaming (Ultimate): `X-Gitlab-Event-Streaming-Token`, a JSON object
/// or array whatever the Content-Type (GitLab sends form-urlencoded by default).
async fn gitlab_audit(r: Delivered<'_>) -> Result<Response<String>, Refusal> {
    let (signer, interval) = ledger(r.db).await?;
    let settings = Settings {
        findings: platform::finding_rules().await,
        ..Settings::without_variables(&signer, interval)
    };
    match ingest::record_audit(r.db, r.body, &pipetrail_core::time::now(), &settings)
        .await
        .map_err(failed)?
    {
        (received, Outcome::Recorded { events, first_seq }) => Ok(json(
            StatusCode::OK,
            &json!({"status": "recorded", "received": received, "events": events, "first_seq": first_seq}),
        )),
        (received, Outcome::Duplicate) => Ok(json(
            StatusCode::OK,
            &json!({"status": "duplicate", "received": received, "events": 0}),
        )),
    }
}

/// GitHub's audit-log stream to Splunk, received as a Splunk HTTP Event Collector
/// (`Authorization: Splunk <token>`, one of `github_audit_hec_tokens`): concatenated HEC
/// envelopes whose `event` is an audit-log entry. Answered in HEC's `{"text","code"}`
/// shape; a batch with one unreadable envelope is refused whole, nothing stored.
async fn github_audit_hec(r: Delivered<'_>) -> Result<Response<String>, Refusal> {
    use pipetrail_core::sources::github_audit::hec;
    let (entries, ignored) = match hec::parse(r.body) {
        Ok(read) => read,
        Err(refused) => {
            let _ = store::count_outcome(r.db, "invalid").await;
            return Ok(json(
                StatusCode::BAD_REQUEST,
                &json!({"text": refused.text, "code": refused.code, "invalid-event-number": refused.event_number, "message": refused.why}),
            ));
        }
    };
    let (signer, interval) = ledger(r.db).await?;
    let settings = Settings {
        findings: platform::finding_rules().await,
        ..Settings::without_variables(&signer, interval)
    };
    let instance = platform::var("github_instance")
        .await
        .unwrap_or_else(|| "github.com".into());
    let outcomes = ingest::record_github_audit(r.db, &entries, &pipetrail_core::time::now(), &settings, &instance)
        .await
        .map_err(|e| platform::db_failure(&e))?;
    let recorded = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Recorded { .. }))
        .count();
    let (text, code) = hec::SUCCESS;
    Ok(json(
        StatusCode::OK,
        &json!({"text": text, "code": code, "recorded": recorded, "duplicate": outcomes.len() - recorded, "ignored": ignored}),
    ))
}

/// NDJSON batches of GitLab's Rails log lines from a log shipper or `pipetrail ship-logs`
/// (`Authorization: Bearer`, one of `gitlab_log_tokens`). `?instance=gitlab.example.com`
/// names the GitLab for targets no webhook has shown yet.
async fn gitlab_logs(r: Delivered<'_>) -> Result<Response<String>, Refusal> {
    let instance = pipetrail_core::params::parse_query(r.query)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "instance"))
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .unwrap_or_else(|| "unknown".into());
    let (signer, interval) = ledger(r.db).await?;
    let settings = Settings {
        findings: platform::finding_rules().await,
        ..Settings::without_variables(&signer, interval)
    };
    let b = ingest::record_logs(r.db, r.body, &instance, &pipetrail_core::time::now(), &settings)
        .await
        .map_err(failed)?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "status": "recorded",
            "lines": b.lines,
            "recorded": b.recorded,
            "events": b.events,
            "duplicate": b.duplicate,
            "ignored": b.ignored,
            "invalid": b.invalid.iter().map(|(n, why)| json!({"line": n, "error": why})).collect::<Vec<_>>(),
        }),
    ))
}

/// What GitLab's REST API shows of one pipeline, `{"pipeline": ..., "jobs": [...]}`, posted
/// by `pipetrail gitlab backfill` with the admin token. The reconciler in the retention
/// component records the same through `ingest::record_api` directly.
async fn gitlab_api(r: Delivered<'_>) -> Result<Response<String>, Refusal> {
    let (signer, interval) = ledger(r.db).await?;
    let settings = Settings {
        findings: platform::finding_rules().await,
        ..Settings::without_variables(&signer, interval)
    };
    let outcome = ingest::record_api(r.db, r.body, &pipetrail_core::time::now(), &settings)
        .await
        .map_err(failed)?;
    Ok(answered(outcome))
}
