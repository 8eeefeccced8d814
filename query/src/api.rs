//! `/api/v1`: events with filters and keyset paging, pipeline provenance, stats, API
//! tokens, the ledger's checkpoint, key and proofs, and export bundles.

use http::{Response, StatusCode};
use pipetrail_core::encoding::base64_encode;
use pipetrail_core::params::{self, ParamError};
use pipetrail_core::sql::DbError;
use pipetrail_core::store::{self, EventFilter, StoredEvent, TokenRecord};
use pipetrail_core::{bundle, merkle, provenance};
use pipetrail_platform::{self as platform, Caller, Db, Request, error, json};
use serde_json::{Value, json};

pub type Reply = Result<Response<String>, DbError>;

pub fn bad_param(e: &ParamError) -> Response<String> {
    json(
        StatusCode::BAD_REQUEST,
        &json!({"error": "bad_parameter", "parameter": e.param, "message": format!("{}: {}", e.param, e.message)}),
    )
}

pub async fn healthz(db: &Db) -> Reply {
    let size = store::tree_size(db).await?;
    let (_, configured) = platform::signer(db).await?;
    // A bad variable is an error a monitor sees, not a default someone finds out about later.
    let mut problems = platform::config_problems().await;
    let ephemeral = db.is_ephemeral().await?;
    if let Some(why) = platform::storage_refusal(db).await? {
        problems.push(format!("database: {why}"));
    }
    let (status, word) = if problems.is_empty() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "misconfigured")
    };
    Ok(json(
        status,
        &json!({
            "status": word,
            "config_errors": problems,
            "schema_version": store::schema_version(db),
            "storage_mode": storage_mode().await,
            "database": if ephemeral { "in memory: lost at restart" } else { "durable" },
            "ledger_size": size,
            "signing_key": if configured { "configured" } else { "GENERATED: try-out only; it lives in the database, so it proves nothing against the database's admin. Set the signing_key variable (pipetrail keygen)." },
        }),
    ))
}

pub async fn events(db: &Db, caller: &Caller, pairs: &[(String, String)]) -> Reply {
    let (mut filter, limit) = match params::event_filter(pairs) {
        Ok(f) => f,
        Err(e) => return Ok(bad_param(&e)),
    };
    filter.scope = caller.scope();
    let mut found = store::list_events(db, &filter, limit + 1).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next = if more {
        found.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    let events: Vec<Value> = found.iter().map(store::StoredEvent::to_api_json).collect();
    let mut body = json!({"events": events, "next_cursor": next});
    if storage_mode().await == "stream-only" {
        body["storage_mode"] = json!("stream-only");
        body["note"] = json!(
            "this install is streaming-only: bodies are kept only until every sink has them; pruned events are listed with their seq and leaf hash"
        );
    }
    Ok(json(StatusCode::OK, &body))
}

/// `GET /api/v1/findings`: findings newest first, filtered by rule and severity as well as
/// the event filters, keyset paged (`next_cursor`).
pub async fn findings(db: &Db, caller: &Caller, pairs: &[(String, String)]) -> Reply {
    let (mut filter, limit) = match pipetrail_core::findings::list::parse(pairs) {
        Ok(f) => f,
        Err(e) => return Ok(bad_param(&e)),
    };
    filter.events.scope = caller.scope();
    let (found, next) = pipetrail_core::findings::list(db, &filter, limit).await?;
    let findings: Vec<Value> = found.iter().map(store::StoredEvent::to_api_json).collect();
    Ok(json(
        StatusCode::OK,
        &json!({"findings": findings, "next_cursor": next.map(|s| s.to_string())}),
    ))
}

pub async fn pipeline(db: &Db, caller: &Caller, forge: &str, id: &str) -> Reply {
    Ok(match pipeline_summary(db, caller, forge, id).await? {
        Ok(summary) => json(StatusCode::OK, &summary),
        Err(refusal) => refusal,
    })
}

/// Every event of one pipeline (or job: `of` = "job"), oldest first, within the caller's
/// scope.
pub async fn all_events(db: &Db, caller: &Caller, forge: &str, id: u64, of: &str) -> Result<Vec<StoredEvent>, DbError> {
    let mut all = Vec::new();
    let mut filter = EventFilter {
        forge: Some(forge.into()),
        scope: caller.scope(),
        ..Default::default()
    };
    if of == "job" {
        filter.job = Some(id);
    } else {
        filter.pipeline = Some(id);
    }
    loop {
        let page = store::list_events(db, &filter, 1000).await?;
        let done = page.len() < 1000;
        filter.after_seq = page.last().map(|e| e.seq);
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// The provenance summary, or the error response to send instead. Out-of-scope pipelines
/// answer exactly like missing ones.
pub async fn pipeline_summary(
    db: &Db,
    caller: &Caller,
    forge: &str,
    id: &str,
) -> Result<Result<Value, Response<String>>, DbError> {
    if !matches!(forge, "gitlab" | "github") {
        return Ok(Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("unknown forge {forge:?}"),
        )));
    }
    let id = match params::parse_u64("id", id) {
        Ok(id) => id,
        Err(e) => return Ok(Err(bad_param(&e))),
    };
    let all = all_events(db, caller, forge, id, "pipeline").await?;
    Ok(provenance::summarize(&all).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no pipeline {id} is recorded"),
        )
    }))
}

pub async fn stats(db: &Db) -> Reply {
    let outcomes: serde_json::Map<String, Value> = store::outcome_counts(db)
        .await?
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let size = store::tree_size(db).await?;
    let cp = store::latest_checkpoint(db).await?;
    let (queued, set_aside) = store::backlog(db).await?;
    // Names only: the sinks variable also holds their tokens.
    let mut sinks = Vec::new();
    // A bad list is named on /healthz; stats shows the sinks it can read.
    for s in platform::sinks().await.unwrap_or_default() {
        let st = pipetrail_core::sinks::state(db, &s.name).await?;
        sinks.push(json!({
            "name": s.name,
            "delivered_through": st.after_seq,
            "lag": (size as i64 - 1 - st.after_seq).max(0),
            "failures": st.failures,
            "waiting_until": st.wait_until,
            "last_error": st.last_error,
        }));
    }
    Ok(json(
        StatusCode::OK,
        &json!({
            "storage_mode": storage_mode().await,
            "deliveries": outcomes,
            // Accepted webhooks not integrated yet, and those the sequencer set aside.
            "inbox": {"queued": queued, "set_aside": set_aside},
            "events_stored": size,
            "events_compacted": pipetrail_core::store::compacted_entries(db).await?,
            "latest_checkpoint": cp.map(|c| json!({"size": c.size, "signed_at": c.signed_at})),
            "sinks": sinks,
        }),
    ))
}

pub async fn create_token(db: &Db, caller: &Caller, req: Request) -> Reply {
    if *caller != Caller::Admin {
        return Ok(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "creating tokens needs the admin token",
        ));
    }
    let body = match platform::read_body(req, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "token requests are limited to 64 KiB",
            ));
        }
    };
    let rec = match token_request(&body) {
        Ok(r) => r,
        Err(m) => return Ok(error(StatusCode::BAD_REQUEST, "invalid_request", m)),
    };
    let token = format!("ptk_{}", pipetrail_core::encoding::hex(&platform::random_bytes(32)));
    store::insert_token(db, &token, &rec, &pipetrail_core::time::now()).await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"token": token, "name": rec.name, "scope": rec.scope, "projects": rec.projects, "note": "shown once; only its hash is stored"}),
    ))
}

fn token_request(body: &[u8]) -> Result<TokenRecord, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let name = v.get("name").and_then(Value::as_str).map(str::trim).unwrap_or("");
    if name.is_empty() || name.len() > 100 {
        return Err("name: required, 1 to 100 characters".into());
    }
    let scope = match v.get("scope") {
        None | Some(Value::Null) => "read",
        Some(Value::String(s)) if s == "read" => "read",
        Some(_) => {
            return Err(
                "scope: only \"read\" tokens can be created; the admin token is the admin_token variable".into(),
            );
        }
    };
    let projects = match v.get("projects") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p {
                Value::Number(n) if n.as_u64().is_some() => Ok(n.to_string()),
                Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                _ => Err("projects: each entry must be a project id or path".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("projects: expected an array of project ids or paths".into()),
    };
    if let Some(unknown) = v
        .as_object()
        .and_then(|o| o.keys().find(|k| !["name", "scope", "projects"].contains(&k.as_str())))
    {
        return Err(format!("{unknown}: unknown field; accepted: name, scope, projects"));
    }
    Ok(TokenRecord {
        name: name.into(),
        scope: scope.into(),
        projects,
    })
}

pub async fn checkpoint(db: &Db) -> Reply {
    match store::latest_checkpoint(db).await? {
        Some(cp) => Ok(platform::text(StatusCode::OK, "text/plain; charset=utf-8", cp.note)),
        None => Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no checkpoint has been signed yet",
        )),
    }
}

pub async fn key(db: &Db) -> Reply {
    let (signer, _) = platform::signer(db).await?;
    Ok(platform::text(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        format!("{}\n", signer.verifier().text()),
    ))
}

pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn only(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ParamError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(ParamError {
            param: k.clone(),
            message: format!("unknown parameter; accepted: {}", allowed.join(", ")),
        }),
        None => Ok(()),
    }
}

/// The proof's tree size: `size` if given (must not exceed the tree), else the latest checkpoint's.
async fn proof_size(db: &Db, pairs: &[(String, String)], name: &str) -> Result<Result<u64, ParamError>, DbError> {
    let tree = store::tree_size(db).await?;
    Ok(match get(pairs, name) {
        Some(v) => params::parse_u64(name, v).and_then(|s| {
            if s > tree {
                Err(ParamError {
                    param: name.into(),
                    message: format!("the tree has {tree} entries"),
                })
            } else {
                Ok(s)
            }
        }),
        None => match store::latest_checkpoint(db).await? {
            Some(cp) => Ok(cp.size),
            None => Err(ParamError {
                param: name.into(),
                message: "no checkpoint yet; give a size".into(),
            }),
        },
    })
}

/// 410 when entry `at` lies in a compacted range or, for a tree size, strictly inside one:
/// only the range's subtree hash remains, so no proof can reach into it.
async fn compacted(db: &Db, at: u64, is_size: bool) -> Result<Option<Response<String>>, DbError> {
    match pipetrail_core::store::compacted_range_containing(db, at).await? {
        Some((start, _)) if is_size && at == start => Ok(None),
        Some((start, end)) => Ok(Some(error(
            StatusCode::GONE,
            "compacted",
            format!(
                "entries {start}..{end} were compacted: only their subtree hash remains, so no proof reaches into them"
            ),
        ))),
        None => Ok(None),
    }
}

pub async fn inclusion(db: &Db, caller: &Caller, pairs: &[(String, String)]) -> Reply {
    if let Err(e) = only(pairs, &["seq", "id", "size"]) {
        return Ok(bad_param(&e));
    }
    let seq = match (get(pairs, "seq"), get(pairs, "id")) {
        (Some(s), None) => match params::parse_u64("seq", s) {
            Ok(s) => s,
            Err(e) => return Ok(bad_param(&e)),
        },
        (None, Some(id)) => match store::seq_of_event_id(db, id).await? {
            Some(s) => s,
            None => return Ok(error(StatusCode::NOT_FOUND, "not_found", format!("no event {id}"))),
        },
        _ => {
            return Ok(bad_param(&ParamError {
                param: "seq".into(),
                message: "give exactly one of seq or id".into(),
            }));
        }
    };
    let size = match proof_size(db, pairs, "size").await? {
        Ok(s) => s,
        Err(e) => return Ok(bad_param(&e)),
    };
    if seq >= size {
        return Ok(bad_param(&ParamError {
            param: "seq".into(),
            message: format!("must be below the tree size {size}"),
        }));
    }
    if let Some(gone) = compacted(db, seq, false).await? {
        return Ok(gone);
    }
    if let Some(gone) = compacted(db, size, true).await? {
        return Ok(gone);
    }
    let Some(ev) = store::event_by_seq(db, seq).await? else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event at seq {seq}"),
        ));
    };
    // The leaf is shown only to callers who may see the event.
    if let (Some(scope), Some(event)) = (caller.scope(), &ev.event)
        && !store::scope_covers(&scope, event)
    {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event at seq {seq}"),
        ));
    }
    let proof = store::range_hashes(db, &merkle::inclusion_ranges(seq, size)).await?;
    let root = store::root_at(db, size).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "seq": seq,
            "tree_size": size,
            "leaf_hash": base64_encode(&ev.leaf_hash),
            "proof": proof.iter().map(|h| base64_encode(h)).collect::<Vec<_>>(),
            "root": base64_encode(&root),
        }),
    ))
}

pub async fn consistency(db: &Db, pairs: &[(String, String)]) -> Reply {
    if let Err(e) = only(pairs, &["from", "to"]) {
        return Ok(bad_param(&e));
    }
    let from = match get(pairs, "from").map(|v| params::parse_u64("from", v)) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Ok(bad_param(&e)),
        None => {
            return Ok(bad_param(&ParamError {
                param: "from".into(),
                message: "required".into(),
            }));
        }
    };
    let to = match proof_size(db, pairs, "to").await? {
        Ok(s) => s,
        Err(e) => return Ok(bad_param(&e)),
    };
    if from > to {
        return Ok(bad_param(&ParamError {
            param: "from".into(),
            message: format!("must not exceed to ({to})"),
        }));
    }
    for at in [from, to] {
        if let Some(gone) = compacted(db, at, true).await? {
            return Ok(gone);
        }
    }
    let proof = store::range_hashes(db, &merkle::consistency_ranges(from, to)).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "from": from,
            "to": to,
            "from_root": base64_encode(&store::root_at(db, from).await?),
            "to_root": base64_encode(&store::root_at(db, to).await?),
            "proof": proof.iter().map(|h| base64_encode(h)).collect::<Vec<_>>(),
        }),
    ))
}

/// `GET /api/v1/export?format=bundle&<event filters>`: events with inclusion proofs against
/// the latest checkpoint. Events after that checkpoint cannot be proven yet and are left out.
pub async fn bundle_export(db: &Db, caller: &Caller, pairs: &[(String, String)]) -> Reply {
    let filters: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "format").cloned().collect();
    let (mut filter, limit) = match params::event_filter_up_to(&filters, bundle::MAX_EVENTS) {
        Ok((f, l)) => (
            f,
            if get(pairs, "limit").is_some() {
                l
            } else {
                bundle::MAX_EVENTS
            },
        ),
        Err(e) => return Ok(bad_param(&e)),
    };
    if filter.descending {
        return Ok(bad_param(&params::ParamError::new(
            "order",
            "a bundle is oldest first (its proofs are checked in ledger order)",
        )));
    }
    filter.scope = caller.scope();
    let Some(cp) = store::latest_checkpoint(db).await? else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no checkpoint has been signed yet",
        ));
    };
    let mut found = store::list_events(db, &filter, limit + 1).await?;
    found.retain(|e| e.seq < cp.size);
    let next = if found.len() > limit {
        found.get(limit - 1).map(|e| e.seq.to_string())
    } else {
        None
    };
    found.truncate(limit);
    let mut entries = Vec::with_capacity(found.len());
    for e in &found {
        let Some(event) = &e.event else { continue };
        let proof = store::range_hashes(db, &merkle::inclusion_ranges(e.seq, cp.size)).await?;
        entries.push(bundle::entry(&event.to_json(), &e.leaf_hash, &proof));
    }
    Ok(json(
        StatusCode::OK,
        &json!({"format": bundle::FORMAT, "checkpoint": cp.note, "tree_size": cp.size, "events": entries, "next_cursor": next}),
    ))
}

/// The ledger at a glance (the ledger page's JSON twin): size, latest checkpoint, the
/// verifier key, and the last in-place verification (`POST /admin/verify`).
pub async fn ledger_state(db: &Db) -> Result<Value, DbError> {
    let size = store::tree_size(db).await?;
    let cp = store::latest_checkpoint(db).await?;
    let (signer, configured) = platform::signer(db).await?;
    let verified_at = store::setting(db, "last_verified_at").await?;
    let verdict = store::setting(db, "last_verified_result").await?;
    Ok(json!({
        "size": size,
        "latest_checkpoint": cp.map(|c| json!({"size": c.size, "signed_at": c.signed_at, "root": base64_encode(&c.root), "note": c.note})),
        "verifier_key": signer.verifier().text(),
        "signing_key_configured": configured,
        "last_verification": verified_at.map(|at| json!({"at": at, "result": verdict})),
    }))
}

pub async fn ledger(db: &Db) -> Reply {
    Ok(json(StatusCode::OK, &ledger_state(db).await?))
}

/// `store`, `both` or `stream-only` (the `storage_mode` variable).
pub async fn storage_mode() -> &'static str {
    platform::storage_mode().await.as_str()
}
