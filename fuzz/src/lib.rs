//! Fuzz entry points, one per parser of the core crate. Each takes arbitrary bytes, runs the
//! parser, and feeds whatever parses through what production does next (lifecycle diff,
//! event building, canonical bytes), asserting the invariants that must hold for any input.
//! A panic anywhere is a finding.
//!
//! The same functions run natively in `core/tests/fuzz_regressions.rs` over the seed corpora
//! and every input a fuzzer ever found (`fuzz/regressions/<target>/`), so a finding stays
//! fixed.

use pipetrail_core::model::Evidence;
use pipetrail_core::sources::facts::{Context, Projection, VariablePolicy};
use pipetrail_core::sources::{github, gitlab_api, gitlab_audit, gitlab_hooks, gitlab_logs};
use pipetrail_core::{bundle, config, gitlab_compat, merkle, note, params, retention, sinks};

const AT: &str = "2026-01-01T00:00:00.000Z";

fn evidence() -> Evidence {
    Evidence {
        source: pipetrail_core::model::Source::GitlabWebhook,
        delivery_id: None,
        payload_sha256: "0".repeat(64),
        remote_ip: None,
    }
}

fn policy() -> VariablePolicy {
    VariablePolicy {
        allowlist: vec!["KEEP".into()],
        hmac_key: Some(b"k".to_vec()),
    }
}

/// GitLab Pipeline and Job Hooks: decode, diff, and a repeat of the same delivery against
/// the projection it produced yields nothing.
pub fn gitlab_hook(data: &[u8]) {
    let _ = gitlab_hooks::redact_body(data);
    let (ev, vars) = (evidence(), policy());
    let ctx = Context {
        recorded_at: AT,
        evidence: &ev,
        variables: &vars,
    };
    for header in [None, Some("Pipeline Hook"), Some("Job Hook")] {
        if let Ok(hook) = gitlab_hooks::parse_hook(data, header) {
            let (events, after) = gitlab_hooks::facts::diff(&hook, &Projection::default(), &ctx);
            for e in &events {
                let _ = e.canonical_bytes();
            }
            let (again, _) = gitlab_hooks::facts::diff(&hook, &after, &ctx);
            assert!(again.is_empty(), "a repeated delivery made {} new facts", again.len());
        }
    }
}

/// GitHub `workflow_run` / `workflow_job` / `ping`: decode, diff, repeat yields nothing.
pub fn github_hook(data: &[u8]) {
    let ev = evidence();
    let vars = VariablePolicy::default();
    let ctx = Context {
        recorded_at: AT,
        evidence: &ev,
        variables: &vars,
    };
    let _ = github::signature_valid(&["s".into()], data, std::str::from_utf8(data).ok());
    for event in ["workflow_run", "workflow_job", "ping", "push"] {
        match github::parse(data, event) {
            Ok(github::Hook::Run(r)) => {
                let (events, after) = github::facts::diff_run(&r, &Projection::default(), &ctx);
                events.iter().for_each(|e| drop(e.canonical_bytes()));
                let (again, _) = github::facts::diff_run(&r, &after, &ctx);
                assert!(again.is_empty(), "a repeated run delivery made new facts");
            }
            Ok(github::Hook::Job(j)) => {
                let (events, after) = github::facts::diff_job(&j, &Projection::default(), &ctx);
                events.iter().for_each(|e| drop(e.canonical_bytes()));
                let (again, _) = github::facts::diff_job(&j, &after, &ctx);
                assert!(again.is_empty(), "a repeated job delivery made new facts");
            }
            _ => {}
        }
    }
}

/// GitLab's audit-event stream: decode, and build the event of each item.
pub fn audit_stream(data: &[u8]) {
    if let Ok(items) = gitlab_audit::parse(data) {
        let home = ("gitlab.example.com".to_string(), 1, Some("g/p".to_string()));
        for a in &items {
            let _ = gitlab_audit::to_event(a, None, evidence(), AT).canonical_bytes();
            let _ = gitlab_audit::to_event(a, Some(&home), evidence(), AT).canonical_bytes();
        }
    }
}

/// GitHub's audit log: Splunk HEC batches and REST API pages, and each entry's event.
pub fn github_audit(data: &[u8]) {
    use pipetrail_core::sources::github_audit::{self, hec};
    let mut entries = Vec::new();
    if let Ok((read, _)) = hec::parse(data) {
        entries.extend(read);
    }
    if let Ok(read) = github_audit::parse_page(data) {
        entries.extend(read);
    }
    let home = ("github.com".to_string(), 1, Some("o/r".to_string()));
    for e in &entries {
        let _ = github_audit::to_event(e, None, 1, "github.com", AT).canonical_bytes();
        let _ = github_audit::to_event(e, Some(&home), 3, "github.com", AT).canonical_bytes();
    }
}

/// Rails log batches (NDJSON) and single lines: decode, and build each fact's event.
pub fn rails_log(data: &[u8]) {
    let target = gitlab_logs::Target {
        instance: "gitlab.example.com".into(),
        project: pipetrail_core::model::Project {
            id: 1,
            path: Some("g/p".into()),
        },
        pipeline_id: Some(1),
    };
    if let Ok(lines) = gitlab_logs::parse_batch(data) {
        for l in lines {
            if let (_, Ok(gitlab_logs::Line::Fact(f))) = l {
                let _ = gitlab_logs::to_event(&f, &target, &Projection::default(), AT).canonical_bytes();
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gitlab_logs::parse_line(text);
    }
}

/// What GitLab's REST API answers, turned into a hook and decoded as production does; a
/// pipeline without the fields the hook needs is refused naming the API's field.
pub fn gitlab_api(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    if let Err(e) = gitlab_api::hook_from_api(&v["pipeline"], &jobs) {
        assert!(
            !e.0.starts_with("object_attributes.id:") && !e.0.starts_with("object_attributes.status:"),
            "a required API field reported under the hook's name: {e}"
        );
    }
    if let Some(headers) = v["headers"].as_object() {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let _ = gitlab_api::next_page(&headers, "https://gitlab.example.com/api/v4/projects/1/pipelines");
        let _ = gitlab_api::retry_after(&headers);
    }
}

/// Every structured Spin variable: sinks, retention policies, and each checked variable.
pub fn configuration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = sinks::parse(text) {
        let ev: pipetrail_core::model::Event = serde_json::from_value(serde_json::json!({
            "v": 1, "seq": 0, "id": "ev_0", "action": "pipeline.created", "occurred_at": AT, "recorded_at": AT,
            "actor": {"kind": "user"}, "attribution": "webhook_triggerer",
            "project": {"id": 1, "path": "g/p"}, "forge": {"kind": "gitlab", "instance": "g"},
            "evidence": {"source": "gitlab.webhook", "payload_sha256": "00"},
        }))
        .expect("a valid event");
        let stored = pipetrail_core::store::StoredEvent {
            seq: 0,
            event: Some(ev),
            leaf_hash: [0; 32],
        };
        for s in &list {
            let _ = s.wants(stored.event.as_ref().unwrap());
            let _ = sinks::messages(s, std::slice::from_ref(&stored));
        }
    }
    if let Ok(p) = retention::parse(text) {
        let _ = p.for_event("pipeline.created", 1, Some("g/p"));
    }
    for variable in [
        "sinks",
        "retention_policies",
        "storage_mode",
        "checkpoint_interval_seconds",
        "witness_urls",
        "gitlab_api_url",
        "gitlab_api_projects",
        "reconcile_since",
        "findings_rules",
        "findings_deleted_within",
        "findings_burst",
    ] {
        let _ = config::check(variable, text);
    }
}

/// Query strings of the API, the GitLab-compatible API and the export.
pub fn query_params(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pipetrail_core::encoding::form_decode(text);
    if let Ok(pairs) = params::parse_query(text) {
        let _ = params::event_filter(&pairs);
        let _ = params::event_filter_up_to(&pairs, 100_000);
        let _ = gitlab_compat::list_params(&pairs);
    }
}

/// Signed notes, checkpoints, keys and export bundles.
pub fn signed_note(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let signer = note::NoteSigner::from_seed("fuzz.example/log", [7u8; 32]).expect("a fixed key");
    let verifier = signer.verifier();
    if let Ok(body) = verifier.open(text) {
        let _ = note::Checkpoint::parse(body);
    }
    let _ = note::Checkpoint::parse(text);
    let _ = note::NoteVerifier::parse(text);
    let _ = note::NoteSigner::parse(text);
    let _ = bundle::verify(text, &verifier);
    // What we sign, we read back.
    if let Ok(signed) = signer.sign(&format!("{}\n", text.replace('\n', " "))) {
        assert!(verifier.open(&signed).is_ok(), "a note we signed does not verify");
    }
}

/// Inclusion and consistency proofs as a verifier receives them: sizes, indexes and hashes
/// from the input; verification must answer, never panic.
pub fn proofs(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let num = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let (a, b) = (num(&data[..8]), num(&data[8..16]));
    let hashes: Vec<merkle::Hash> = data[16..]
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    let (first, rest) = hashes.split_first().map_or((&[0u8; 32], &[][..]), |(f, r)| (f, r));
    let (second, proof) = rest.split_first().map_or((&[0u8; 32], &[][..]), |(s, p)| (s, p));
    let _ = merkle::verify_inclusion(a, b, first, proof, second);
    let _ = merkle::verify_consistency(a, b, first, second, proof);
    // The ranges the server computes for requests it has already checked (index < size,
    // old size <= new size).
    let size = b % 4096 + 1;
    let _ = merkle::inclusion_ranges(a % size, size);
    let _ = merkle::consistency_ranges(a % (size + 1), size);
    let _ = merkle::root_from_leaves(&hashes);
}
