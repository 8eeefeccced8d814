//! Every HTTP route of the app, in one table. The components dispatch through it (`find`)
//! and the OpenAPI document is generated from it (`openapi`), so a route cannot exist
//! without being documented, nor be documented without existing.

use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Open (liveness only).
    None,
    /// A shared secret in this header (webhooks, streams, log shippers).
    Secret(&'static str),
    /// An API token (`Authorization: Bearer`, `PRIVATE-TOKEN`, or the UI's cookie).
    Token,
    /// The admin token.
    Admin,
}

#[derive(Debug)]
pub struct Route {
    pub component: &'static str,
    pub method: &'static str,
    /// `/api/v1/pipelines/{forge}/{id}`: `{name}` matches one path segment.
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// `application/json`, `text/html`, `text/plain`, `text/csv`.
    pub produces: &'static str,
}

const EVENT_FILTERS: &[(&str, &str)] = &[
    ("forge", "gitlab or github"),
    ("project", "project id or path"),
    ("pipeline", "pipeline id"),
    ("job", "job id"),
    ("actor", "username"),
    ("action", "e.g. pipeline.canceled"),
    ("trigger", "push, web, api, schedule, ..."),
    ("ref", "branch or tag"),
    (
        "source",
        "evidence source: gitlab.webhook, gitlab.audit_stream, gitlab.rails_log, gitlab.api",
    ),
    ("since", "RFC 3339; on occurred_at, inclusive"),
    ("until", "RFC 3339; exclusive"),
    ("cursor", "next_cursor of the previous page"),
    ("limit", "page size, 1-1000 (default 100)"),
    ("order", "asc (oldest first, the default) or desc (newest first)"),
];

const EXPORT_PARAMS: &[(&str, &str)] = &[
    ("format", "csv, jsonl or bundle"),
    ("project", "project id or path"),
    ("pipeline", "pipeline id"),
    ("job", "job id"),
    ("actor", "username"),
    ("action", "e.g. pipeline.canceled"),
    ("since", "RFC 3339"),
    ("until", "RFC 3339"),
];

const V4_LIST: &[(&str, &str)] = &[
    ("created_after", "ISO 8601"),
    ("created_before", "ISO 8601"),
    ("page", "offset pagination, from 1"),
    ("per_page", "1-100 (default 20)"),
    ("pagination", "keyset"),
    ("order_by", "id"),
    ("sort", "desc (default) or asc"),
    ("cursor", "keyset cursor from the Link header"),
];

macro_rules! route {
    ($c:literal, $m:literal, $p:literal, $auth:expr, $produces:literal, $q:expr, $s:literal) => {
        Route {
            component: $c,
            method: $m,
            path: $p,
            summary: $s,
            auth: $auth,
            query: $q,
            produces: $produces,
        }
    };
}

const JSON: &str = "application/json";

pub const ROUTES: &[Route] = &[
    route!(
        "ingest",
        "POST",
        "/hooks/gitlab",
        Auth::Secret("X-Gitlab-Token"),
        "application/json",
        &[],
        "GitLab Pipeline and Job Hooks"
    ),
    route!(
        "ingest",
        "POST",
        "/hooks/gitlab/audit",
        Auth::Secret("X-Gitlab-Event-Streaming-Token"),
        "application/json",
        &[],
        "GitLab audit-event streaming"
    ),
    route!(
        "ingest",
        "POST",
        "/hooks/github",
        Auth::Secret("X-Hub-Signature-256"),
        "application/json",
        &[],
        "GitHub workflow_run and workflow_job webhooks (HMAC-signed body)"
    ),
    route!(
        "ingest",
        "POST",
        "/ingest/gitlab-logs",
        Auth::Secret("Authorization"),
        "application/json",
        &[("instance", "the GitLab host the lines come from")],
        "NDJSON batches of GitLab Rails log lines"
    ),
    route!(
        "ingest",
        "POST",
        "/ingest/gitlab-api",
        Auth::Admin,
        "application/json",
        &[],
        "A pipeline and its jobs as GitLab's REST API shows them (backfill)"
    ),
    route!(
        "retention",
        "POST",
        "/admin/tick",
        Auth::Admin,
        "application/json",
        &[],
        "Scheduled work: checkpoint, witnesses, reconciler, sinks, retention, compaction"
    ),
    route!(
        "retention",
        "POST",
        "/admin/reconcile",
        Auth::Admin,
        "application/json",
        &[],
        "One bounded GitLab API reconciler run"
    ),
    route!(
        "retention",
        "POST",
        "/admin/retention",
        Auth::Admin,
        "application/json",
        &[(
            "dry_run",
            "true: report what would be pruned, change nothing, compact nothing"
        )],
        "One bounded retention sweep (retention_policies), then one bounded compaction run"
    ),
    route!(
        "retention",
        "POST",
        "/admin/deliver",
        Auth::Admin,
        "application/json",
        &[],
        "Deliver to every sink from its cursor (stream-only: then prune what all have)"
    ),
    route!(
        "retention",
        "POST",
        "/admin/verify",
        Auth::Admin,
        "application/json",
        &[],
        "Verify the whole ledger in place and record the result"
    ),
    route!(
        "query",
        "GET",
        "/healthz",
        Auth::None,
        "application/json",
        &[],
        "Liveness, schema version, ledger size; 503 with config_errors when a variable is bad"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/openapi.json",
        Auth::None,
        "application/json",
        &[],
        "This document"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/events",
        Auth::Token,
        "application/json",
        EVENT_FILTERS,
        "Events, oldest first, keyset paged"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/pipelines/{forge}/{id}",
        Auth::Token,
        "application/json",
        &[],
        "A pipeline's provenance: who triggered, canceled, retried, played, deleted, with evidence"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/stats",
        Auth::Token,
        "application/json",
        &[],
        "Deliveries by outcome, events, latest checkpoint (unscoped tokens)"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/ledger",
        Auth::Token,
        "application/json",
        &[],
        "Ledger size, latest checkpoint, verifier key, last verification"
    ),
    route!(
        "query",
        "POST",
        "/api/v1/tokens",
        Auth::Admin,
        "application/json",
        &[],
        "Create a read token (shown once)"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/checkpoint",
        Auth::Token,
        "text/plain",
        &[],
        "The latest signed checkpoint"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/key",
        Auth::Token,
        "text/plain",
        &[],
        "The verifier key"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/proof/inclusion",
        Auth::Token,
        "application/json",
        &[("seq", "event seq"), ("id", "event id"), ("size", "tree size")],
        "Inclusion proof"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/proof/consistency",
        Auth::Token,
        "application/json",
        &[("from", "older size"), ("to", "newer size")],
        "Consistency proof"
    ),
    route!(
        "query",
        "GET",
        "/api/v1/export",
        Auth::Token,
        "text/csv",
        EXPORT_PARAMS,
        "Export as CSV or JSON Lines (streamed) or a verifiable bundle"
    ),
    route!(
        "query",
        "GET",
        "/api/v4/audit_events",
        Auth::Token,
        "application/json",
        V4_LIST,
        "GitLab-compatible: all audit events"
    ),
    route!(
        "query",
        "GET",
        "/api/v4/audit_events/{id}",
        Auth::Token,
        "application/json",
        &[],
        "GitLab-compatible: one audit event"
    ),
    route!(
        "query",
        "GET",
        "/api/v4/projects/{id}/audit_events",
        Auth::Token,
        "application/json",
        V4_LIST,
        "GitLab-compatible: a project's audit events"
    ),
    route!(
        "query",
        "GET",
        "/api/v4/projects/{id}/audit_events/{event_id}",
        Auth::Token,
        "application/json",
        &[],
        "GitLab-compatible: one of a project's audit events"
    ),
    route!(
        "query",
        "GET",
        "/api/v4/groups/{id}/audit_events",
        Auth::Token,
        "application/json",
        V4_LIST,
        "GitLab-compatible: a group's audit events (group by path)"
    ),
    route!(
        "query",
        "GET",
        "/api/v4/groups/{id}/audit_events/{event_id}",
        Auth::Token,
        "application/json",
        &[],
        "GitLab-compatible: one of a group's audit events"
    ),
    route!(
        "query",
        "GET",
        "/ui",
        Auth::Token,
        "text/html",
        EVENT_FILTERS,
        "Audit log page"
    ),
    route!("query", "GET", "/ui/login", Auth::None, "text/html", &[], "Login page"),
    route!(
        "query",
        "POST",
        "/ui/login",
        Auth::None,
        "text/html",
        &[],
        "Log in with an API token (sets an HttpOnly cookie)"
    ),
    route!("query", "POST", "/ui/logout", Auth::None, "text/html", &[], "Log out"),
    route!(
        "query",
        "GET",
        "/ui/pipelines/{forge}/{id}",
        Auth::Token,
        "text/html",
        &[],
        "Pipeline provenance page"
    ),
    route!(
        "query",
        "GET",
        "/ui/jobs/{forge}/{id}",
        Auth::Token,
        "text/html",
        &[],
        "Job page"
    ),
    route!(
        "query",
        "GET",
        "/ui/actors/{username}",
        Auth::Token,
        "text/html",
        &[("cursor", "older page")],
        "Everything one user did"
    ),
    route!(
        "query",
        "GET",
        "/ui/ledger",
        Auth::Token,
        "text/html",
        &[],
        "Ledger page"
    ),
    route!(
        "query",
        "GET",
        "/ui/assets/{file}",
        Auth::None,
        "text/plain",
        &[],
        "The UI's script and style"
    ),
];

/// What a path matched.
pub enum Found<'a> {
    Route(&'a Route, Vec<(&'static str, String)>),
    /// The path exists with other methods.
    WrongMethod(Vec<&'static str>),
    /// The path matches a route, but this parameter's segment is not valid percent-encoded
    /// UTF-8: 400, naming it.
    MalformedSegment(&'static str),
    NotFound,
}

/// The route of `component` for this request, with its path parameters.
pub fn find(component: &str, method: &str, path: &str) -> Found<'static> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let mut methods = Vec::new();
    for r in ROUTES.iter().filter(|r| r.component == component) {
        match matches(r.path, path) {
            Some(Ok(params)) if r.method == method => return Found::Route(r, params),
            Some(Err(name)) if r.method == method => return Found::MalformedSegment(name),
            Some(_) => methods.push(r.method),
            None => {}
        }
    }
    if methods.is_empty() {
        Found::NotFound
    } else {
        Found::WrongMethod(methods)
    }
}

/// The template's parameters if `path` has its shape; `Err(name)` when a parameter's
/// segment does not decode.
type Matched = Result<Vec<(&'static str, String)>, &'static str>;

fn matches(template: &'static str, path: &str) -> Option<Matched> {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if t.len() != p.len() {
        return None;
    }
    let mut params = Vec::new();
    for (ts, ps) in t.iter().zip(&p) {
        match ts.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            Some(name) if !ps.is_empty() => match crate::encoding::path_decode(ps) {
                Some(value) => params.push((name, value)),
                None => return Some(Err(name)),
            },
            Some(_) => return None,
            None if ts == ps => {}
            None => return None,
        }
    }
    Some(Ok(params))
}

/// The OpenAPI 3 document of every route.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path).or_insert_with(|| json!({}));
        let mut parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|n| n.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(
            r.query
                .iter()
                .map(|(name, d)| json!({"name": name, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})),
        );
        let security = match r.auth {
            Auth::None => json!([]),
            Auth::Secret("Authorization") => json!([{"bearer": []}]),
            Auth::Secret(_) => json!([{"forgeSecret": []}]),
            Auth::Token | Auth::Admin => json!([{"bearer": []}, {"privateToken": []}, {"cookie": []}]),
        };
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method.to_ascii_lowercase(), r.path.replace(['/', '{', '}', '.', '-'], "_")),
            "tags": [r.component],
            "parameters": parameters,
            "security": security,
            "responses": {"200": {"description": "OK", "content": {r.produces: {}}}, "default": {"description": "an error: {\"error\", \"message\"}", "content": {JSON: {}}}},
        });
        if let Auth::Secret(h) = r.auth {
            op["description"] = json!(format!("Authenticated by the {h} header."));
        }
        if r.auth == Auth::Admin {
            op["description"] = json!("Admin token only.");
        }
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "pipetrail", "version": env!("CARGO_PKG_VERSION"), "description": "Immutable, provable audit trail of CI/CD pipelines."},
        "paths": paths,
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "privateToken": {"type": "apiKey", "in": "header", "name": "PRIVATE-TOKEN"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "pipetrail_token"},
            "forgeSecret": {"type": "apiKey", "in": "header", "name": "X-Gitlab-Token"},
        }},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_segments() {
        match find("query", "GET", "/api/v1/pipelines/gitlab/287/") {
            Found::Route(r, p) => {
                assert_eq!(r.path, "/api/v1/pipelines/{forge}/{id}");
                assert_eq!(p, vec![("forge", "gitlab".to_string()), ("id", "287".to_string())]);
            }
            _ => panic!("no match"),
        }
        match find("query", "GET", "/api/v4/projects/grp%2Fapp/audit_events") {
            Found::Route(_, p) => assert_eq!(p[0].1, "grp/app"),
            _ => panic!("no match"),
        }
        // A path segment is not form data: `+` stays a plus sign.
        match find("query", "GET", "/api/v4/projects/grp%2Fc+%2B/audit_events") {
            Found::Route(_, p) => assert_eq!(p[0].1, "grp/c++"),
            _ => panic!("no match"),
        }
        assert!(matches!(
            find("query", "GET", "/api/v4/projects/grp%zz/audit_events"),
            Found::MalformedSegment("id")
        ));
        assert!(matches!(find("query", "DELETE", "/api/v1/events"), Found::WrongMethod(m) if m == ["GET"]));
        assert!(matches!(
            find("query", "GET", "/api/v1/pipelines/gitlab"),
            Found::NotFound
        ));
        assert!(matches!(find("ingest", "GET", "/api/v1/events"), Found::NotFound));
    }

    #[test]
    fn the_document_lists_every_route() {
        let doc = openapi();
        for r in ROUTES {
            assert!(
                doc["paths"][r.path][r.method.to_ascii_lowercase()].is_object(),
                "{}",
                r.path
            );
        }
    }
}
