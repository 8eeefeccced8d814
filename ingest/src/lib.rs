//! The `ingest` component: behind the webhook URL. Authenticates, bounds and decodes each
//! delivery, and records it through `pipetrail_core::ingest` in one transaction; it answers
//! 2xx only after COMMIT.

use http::{Response, StatusCode};
use pipetrail_core::encoding::ct_eq;
use pipetrail_core::ingest::{self, Delivery, GithubDelivery, GithubOutcome, IngestError, Outcome, Settings};
use pipetrail_core::note::NoteSigner;
use pipetrail_core::routes::{self, Found};
use pipetrail_core::sources::facts::VariablePolicy;
use pipetrail_core::sources::github;
use pipetrail_core::store;
use pipetrail_platform::{self as platform, Db, Request, error, header, json};
use serde_json::json;
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> Response<String> {
    let path = req.uri().path().to_string();
    let route = match routes::find("ingest", req.method().as_str(), &path) {
        Found::Route(r, _) => r.path,
        Found::WrongMethod(_) => return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST"),
        Found::NotFound | Found::MalformedSegment(_) => {
            return error(StatusCode::NOT_FOUND, "not_found", format!("no route {path}"));
        }
    };
    let result = match route {
        "/hooks/gitlab" => gitlab(req).await,
        "/hooks/gitlab/audit" => gitlab_audit(req).await,
        "/hooks/github" => github(req).await,
        "/ingest/gitlab-logs" => gitlab_logs(req).await,
        _ => gitlab_api(req).await,
    };
    result.unwrap_or_else(|refusal| refusal)
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

/// Opens the database and checks the request's `header_name` against the comma-separated
/// secrets of `variable`. Every secret is compared in full, so timing does not say which one
/// nearly matched.
async fn authorize(req: &Request, variable: &str, header_name: &str) -> Result<Db, Refusal> {
    let db = open_store().await?;
    let secrets = platform::var_list(variable).await;
    let given = header(req.headers(), header_name).unwrap_or("");
    let given = if header_name.eq_ignore_ascii_case("authorization") {
        given.strip_prefix("Bearer ").unwrap_or(given).trim()
    } else {
        given
    };
    let ok = secrets
        .iter()
        .fold(false, |acc, s| ct_eq(s.as_bytes(), given.as_bytes()) | acc);
    if secrets.is_empty() || !ok {
        let _ = store::count_outcome(&db, "unauthorized").await;
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("missing or wrong {header_name}"),
        ));
    }
    Ok(db)
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
    let interval = platform::checkpoint_interval().await.map_err(platform::misconfigured)?;
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

fn failed(e: IngestError) -> Refusal {
    match e {
        IngestError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_payload", m),
        IngestError::Db(e) => platform::db_failure(&e),
    }
}

/// GitLab Pipeline and Job Hooks (`X-Gitlab-Token`).
async fn gitlab(req: Request) -> Result<Response<String>, Refusal> {
    let db = authorize(&req, "gitlab_webhook_secret", "X-Gitlab-Token").await?;
    let event = header(req.headers(), "x-gitlab-event").map(str::to_string);
    if let Some(kind) = event.as_deref()
        && !["Pipeline Hook", "Job Hook"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(kind))
    {
        let _ = store::count_outcome(&db, "ignored").await;
        return Ok(json(
            StatusCode::ACCEPTED,
            &json!({"status": "ignored", "reason": format!("{kind} is not recorded")}),
        ));
    }
    let idem = header(req.headers(), "idempotency-key").map(str::to_string);
    let uuid = header(req.headers(), "x-gitlab-event-uuid").map(str::to_string);
    let body = body(&db, req).await?;
    let (signer, interval) = ledger(&db).await?;
    let policy = VariablePolicy {
        allowlist: platform::var_list("variables_allowlist").await,
        hmac_key: platform::var("variables_hmac_key").await.map(String::into_bytes),
    };
    let received_at = pipetrail_core::time::now();
    let delivery = Delivery {
        body: &body,
        event_header: event.as_deref(),
        idempotency_key: idem.as_deref(),
        event_uuid: uuid.as_deref(),
        received_at: &received_at,
    };
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: interval,
        without_tree: cfg!(feature = "bench-without-tree"),
    };
    let outcome = ingest::record_gitlab(&db, &delivery, &settings).await.map_err(failed)?;
    Ok(answered(outcome))
}

/// GitHub webhooks: the body's HMAC-SHA256 under `github_webhook_secret` must be the
/// `X-Hub-Signature-256` GitHub sends, so the body is read (bounded) before anything else.
async fn github(req: Request) -> Result<Response<String>, Refusal> {
    let db = open_store().await?;
    let event = header(req.headers(), "x-github-event").unwrap_or("").to_string();
    let guid = header(req.headers(), "x-github-delivery").map(str::to_string);
    let signature = header(req.headers(), "x-hub-signature-256").map(str::to_string);
    let body = body(&db, req).await?;
    let secrets = platform::var_list("github_webhook_secret").await;
    if !github::signature_valid(&secrets, &body, signature.as_deref()) {
        let _ = store::count_outcome(&db, "unauthorized").await;
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Hub-Signature-256",
        ));
    }
    let (signer, interval) = ledger(&db).await?;
    let settings = Settings::without_variables(&signer, interval);
    let received_at = pipetrail_core::time::now();
    let delivery = GithubDelivery {
        body: &body,
        event: &event,
        delivery_id: guid.as_deref(),
        received_at: &received_at,
    };
    Ok(
        match ingest::record_github(&db, &delivery, &settings).await.map_err(failed)? {
            GithubOutcome::Recorded(outcome) => answered(outcome),
            GithubOutcome::Ping { zen } => json(StatusCode::OK, &json!({"status": "pong", "zen": zen})),
            GithubOutcome::Ignored(event) => json(
                StatusCode::ACCEPTED,
                &json!({"status": "ignored", "reason": format!("{event} is not recorded")}),
            ),
        },
    )
}

/// GitLab audit-event streaming (Ultimate): `X-Gitlab-Event-Streaming-Token`, a JSON object
/// or array whatever the Content-Type (GitLab sends form-urlencoded by default).
async fn gitlab_audit(req: Request) -> Result<Response<String>, Refusal> {
    let db = authorize(&req, "gitlab_audit_stream_tokens", "X-Gitlab-Event-Streaming-Token").await?;
    let body = body(&db, req).await?;
    let (signer, interval) = ledger(&db).await?;
    let settings = Settings::without_variables(&signer, interval);
    match ingest::record_audit(&db, &body, &pipetrail_core::time::now(), &settings)
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

/// NDJSON batches of GitLab's Rails log lines from a log shipper or `pipetrail ship-logs`
/// (`Authorization: Bearer`, one of `gitlab_log_tokens`). `?instance=gitlab.example.com`
/// names the GitLab for targets no webhook has shown yet.
async fn gitlab_logs(req: Request) -> Result<Response<String>, Refusal> {
    let db = authorize(&req, "gitlab_log_tokens", "Authorization").await?;
    let instance = pipetrail_core::params::parse_query(req.uri().query().unwrap_or(""))
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "instance"))
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .unwrap_or_else(|| "unknown".into());
    let body = body(&db, req).await?;
    let (signer, interval) = ledger(&db).await?;
    let settings = Settings::without_variables(&signer, interval);
    let b = ingest::record_logs(&db, &body, &instance, &pipetrail_core::time::now(), &settings)
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
async fn gitlab_api(req: Request) -> Result<Response<String>, Refusal> {
    let db = open_store().await?;
    // As on every admin route: 401 without a valid token, 403 for a read token.
    match platform::authenticate(&db, req.headers()).await {
        Ok(platform::Caller::Admin) => {}
        Ok(_) => return Err(error(StatusCode::FORBIDDEN, "forbidden", "the admin token is required")),
        Err(r) => {
            let _ = store::count_outcome(&db, "unauthorized").await;
            return Err(r);
        }
    }
    let body = body(&db, req).await?;
    let (signer, interval) = ledger(&db).await?;
    let settings = Settings::without_variables(&signer, interval);
    let outcome = ingest::record_api(&db, &body, &pipetrail_core::time::now(), &settings)
        .await
        .map_err(failed)?;
    Ok(answered(outcome))
}
