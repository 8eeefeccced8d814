//! The `ingest` component: behind the webhook URL. Authenticates, bounds and decodes each
//! delivery, and records it through `pipetrail_core::ingest` in one transaction; it answers
//! 2xx only after COMMIT.

use http::{Method, Response, StatusCode};
use pipetrail_core::encoding::ct_eq;
use pipetrail_core::ingest::{self, Delivery, IngestError, Outcome, Settings};
use pipetrail_core::lifecycle::VariablePolicy;
use pipetrail_core::store;
use pipetrail_platform::{self as platform, Db, Request, error, header, json};
use serde_json::json;
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> Response<String> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/hooks/gitlab") => gitlab(req).await,
        (&Method::POST, "/hooks/gitlab/audit") => gitlab_audit(req).await,
        (_, "/hooks/gitlab/audit") => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST"),
        (_, "/hooks/gitlab") => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST"),
        (_, path) => error(StatusCode::NOT_FOUND, "not_found", format!("no route {path}")),
    }
}

async fn gitlab(req: Request) -> Response<String> {
    let db = match Db::open().await {
        Ok(db) => db,
        Err(e) => return platform::db_failure(&e),
    };
    let secrets = platform::var_list("gitlab_webhook_secret").await;
    let given = header(req.headers(), "x-gitlab-token").unwrap_or("");
    // Every configured secret is compared in full, so timing does not say which one nearly matched.
    let ok = secrets
        .iter()
        .fold(false, |acc, s| ct_eq(s.as_bytes(), given.as_bytes()) | acc);
    if secrets.is_empty() || !ok {
        let _ = store::count_outcome(&db, "unauthorized").await;
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Gitlab-Token",
        );
    }
    let event = header(req.headers(), "x-gitlab-event").map(str::to_string);
    if let Some(kind) = event.as_deref()
        && !["Pipeline Hook", "Job Hook"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(kind))
    {
        let _ = store::count_outcome(&db, "ignored").await;
        return json(
            StatusCode::ACCEPTED,
            &json!({"status": "ignored", "reason": format!("{kind} is not recorded")}),
        );
    }
    let idem = header(req.headers(), "idempotency-key").map(str::to_string);
    let uuid = header(req.headers(), "x-gitlab-event-uuid").map(str::to_string);
    let body = match platform::read_body(req, platform::MAX_BODY).await {
        Ok(b) => b,
        Err(platform::BodyError::TooLarge) => {
            let _ = store::count_outcome(&db, "too_large").await;
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "bodies are limited to 25 MB, as GitLab's are",
            );
        }
        Err(platform::BodyError::Read(m)) => return error(StatusCode::BAD_REQUEST, "unreadable_body", m),
    };
    let (signer, _) = match platform::signer(&db).await {
        Ok(s) => s,
        Err(e) => return platform::db_failure(&e),
    };
    let policy = VariablePolicy {
        allowlist: platform::var_list("variables_allowlist").await,
        hmac_key: platform::var("variables_hmac_key").await.map(String::into_bytes),
    };
    let interval = platform::var("checkpoint_interval_seconds")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let received_at = platform::now();
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
    match ingest::record_gitlab(&db, &delivery, &settings).await {
        Ok(Outcome::Recorded { events, first_seq }) => json(
            StatusCode::OK,
            &json!({"status": "recorded", "events": events, "first_seq": first_seq}),
        ),
        Ok(Outcome::Duplicate) => json(StatusCode::OK, &json!({"status": "duplicate", "events": 0})),
        Err(IngestError::Invalid(m)) => error(StatusCode::BAD_REQUEST, "invalid_payload", m),
        Err(IngestError::Db(e)) => platform::db_failure(&e),
    }
}

/// GitLab audit-event streaming (Ultimate): `X-Gitlab-Event-Streaming-Token`, a JSON object
/// or array whatever the Content-Type (GitLab sends form-urlencoded by default).
async fn gitlab_audit(req: Request) -> Response<String> {
    let db = match Db::open().await {
        Ok(db) => db,
        Err(e) => return platform::db_failure(&e),
    };
    let tokens = platform::var_list("gitlab_audit_stream_tokens").await;
    let given = header(req.headers(), "x-gitlab-event-streaming-token").unwrap_or("");
    let ok = tokens
        .iter()
        .fold(false, |acc, t| ct_eq(t.as_bytes(), given.as_bytes()) | acc);
    if tokens.is_empty() || !ok {
        let _ = store::count_outcome(&db, "unauthorized").await;
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Gitlab-Event-Streaming-Token",
        );
    }
    let body = match platform::read_body(req, platform::MAX_BODY).await {
        Ok(b) => b,
        Err(platform::BodyError::TooLarge) => {
            let _ = store::count_outcome(&db, "too_large").await;
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "bodies are limited to 25 MB",
            );
        }
        Err(platform::BodyError::Read(m)) => return error(StatusCode::BAD_REQUEST, "unreadable_body", m),
    };
    let (signer, _) = match platform::signer(&db).await {
        Ok(s) => s,
        Err(e) => return platform::db_failure(&e),
    };
    let interval = platform::var("checkpoint_interval_seconds")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let policy = VariablePolicy::default();
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: interval,
        without_tree: false,
    };
    match ingest::record_audit(&db, &body, &platform::now(), &settings).await {
        Ok((received, Outcome::Recorded { events, first_seq })) => json(
            StatusCode::OK,
            &json!({"status": "recorded", "received": received, "events": events, "first_seq": first_seq}),
        ),
        Ok((received, Outcome::Duplicate)) => json(
            StatusCode::OK,
            &json!({"status": "duplicate", "received": received, "events": 0}),
        ),
        Err(IngestError::Invalid(m)) => error(StatusCode::BAD_REQUEST, "invalid_payload", m),
        Err(IngestError::Db(e)) => platform::db_failure(&e),
    }
}
