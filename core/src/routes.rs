//! Every HTTP route of the app, in one table. The components dispatch through it (`find`)
//! and the OpenAPI document is generated from it (`openapi`), so a route cannot exist
//! without being documented, nor be documented without existing.

use serde_json::{Map, Value, json};

/// Who may call a route. The components enforce it in one place before any handler runs
/// (`pipetrail_platform::auth`), from this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Open (liveness, the API description, the login page, the UI's assets).
    None,
    /// A shared secret in `header`: one of the comma-separated values of the Spin variable
    /// `variable` (webhooks, audit streams, log shippers). `Authorization` takes `Bearer`.
    Secret {
        header: &'static str,
        variable: &'static str,
    },
    /// An HMAC-SHA256 of the body under one of `variable`'s secrets, in `header` (GitHub's
    /// `sha256=<hex>`): checked once the body is read, before anything is decoded.
    BodySignature {
        header: &'static str,
        variable: &'static str,
    },
    /// An API token (`Authorization: Bearer`, `PRIVATE-TOKEN`, or the UI's cookie).
    Token,
    /// The admin token.
    Admin,
}

/// Which handler serves a route. Each component matches its own enum exhaustively, so a
/// row without a handler, or a handler without a row, does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Ingest(IngestRoute),
    Query(QueryRoute),
    Retention(RetentionRoute),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestRoute {
    GitlabHooks,
    GitlabAuditStream,
    GithubHooks,
    GitlabLogs,
    GitlabApi,
    GithubAuditHec,
    /// The same collector under Splunk's `/event` path.
    GithubAuditHecEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionRoute {
    Tick,
    Reconcile,
    Retention,
    Deliver,
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryRoute {
    Healthz,
    OpenApi,
    Events,
    Pipeline,
    Stats,
    Ledger,
    CreateToken,
    Checkpoint,
    Key,
    InclusionProof,
    ConsistencyProof,
    Export,
    Findings,
    V4InstanceEvents,
    V4InstanceEvent,
    V4ProjectEvents,
    V4ProjectEvent,
    V4GroupEvents,
    V4GroupEvent,
    UiAuditLog,
    UiLoginForm,
    UiLogin,
    UiLogout,
    UiPipeline,
    UiJob,
    UiActor,
    UiFindings,
    UiLedger,
    UiAsset,
}

impl Handler {
    /// The Spin component that serves it (`spin.toml`'s component ids).
    pub fn component(self) -> &'static str {
        match self {
            Handler::Ingest(_) => "ingest",
            Handler::Query(_) => "query",
            Handler::Retention(_) => "retention",
        }
    }

    pub fn ingest(self) -> Option<IngestRoute> {
        match self {
            Handler::Ingest(h) => Some(h),
            _ => None,
        }
    }

    pub fn query(self) -> Option<QueryRoute> {
        match self {
            Handler::Query(h) => Some(h),
            _ => None,
        }
    }

    pub fn retention(self) -> Option<RetentionRoute> {
        match self {
            Handler::Retention(h) => Some(h),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub handler: Handler,
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

impl Route {
    pub fn component(&self) -> &'static str {
        self.handler.component()
    }
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
    ($h:expr, $m:literal, $p:literal, $auth:expr, $produces:literal, $q:expr, $s:literal) => {
        Route {
            handler: $h,
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
        Handler::Ingest(IngestRoute::GitlabHooks),
        "POST",
        "/hooks/gitlab",
        Auth::Secret {
            header: "X-Gitlab-Token",
            variable: "gitlab_webhook_secret"
        },
        "application/json",
        &[],
        "GitLab Pipeline and Job Hooks"
    ),
    route!(
        Handler::Ingest(IngestRoute::GitlabAuditStream),
        "POST",
        "/hooks/gitlab/audit",
        Auth::Secret {
            header: "X-Gitlab-Event-Streaming-Token",
            variable: "gitlab_audit_stream_tokens"
        },
        "application/json",
        &[],
        "GitLab audit-event streaming"
    ),
    route!(
        Handler::Ingest(IngestRoute::GithubHooks),
        "POST",
        "/hooks/github",
        Auth::BodySignature {
            header: "X-Hub-Signature-256",
            variable: "github_webhook_secret"
        },
        "application/json",
        &[],
        "GitHub workflow_run and workflow_job webhooks (HMAC-signed body)"
    ),
    route!(
        Handler::Ingest(IngestRoute::GitlabLogs),
        "POST",
        "/ingest/gitlab-logs",
        Auth::Secret {
            header: "Authorization",
            variable: "gitlab_log_tokens"
        },
        "application/json",
        &[("instance", "the GitLab host the lines come from")],
        "NDJSON batches of GitLab Rails log lines"
    ),
    route!(
        Handler::Ingest(IngestRoute::GitlabApi),
        "POST",
        "/ingest/gitlab-api",
        Auth::Admin,
        "application/json",
        &[],
        "A pipeline and its jobs as GitLab's REST API shows them (backfill)"
    ),
    route!(
        Handler::Ingest(IngestRoute::GithubAuditHec),
        "POST",
        "/services/collector",
        Auth::Secret {
            header: "Authorization",
            variable: "github_audit_hec_tokens"
        },
        "application/json",
        &[],
        "GitHub audit-log streaming as a Splunk HTTP Event Collector (Authorization: Splunk <token>)"
    ),
    route!(
        Handler::Ingest(IngestRoute::GithubAuditHecEvent),
        "POST",
        "/services/collector/event",
        Auth::Secret {
            header: "Authorization",
            variable: "github_audit_hec_tokens"
        },
        "application/json",
        &[],
        "The same collector under Splunk's /event path"
    ),
    route!(
        Handler::Retention(RetentionRoute::Tick),
        "POST",
        "/admin/tick",
        Auth::Admin,
        "application/json",
        &[],
        "Scheduled work: checkpoint, witnesses, reconciler, sinks, retention, compaction"
    ),
    route!(
        Handler::Retention(RetentionRoute::Reconcile),
        "POST",
        "/admin/reconcile",
        Auth::Admin,
        "application/json",
        &[],
        "One bounded GitLab API reconciler run"
    ),
    route!(
        Handler::Retention(RetentionRoute::Retention),
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
        Handler::Retention(RetentionRoute::Deliver),
        "POST",
        "/admin/deliver",
        Auth::Admin,
        "application/json",
        &[],
        "Deliver to every sink from its cursor (stream-only: then prune what all have)"
    ),
    route!(
        Handler::Retention(RetentionRoute::Verify),
        "POST",
        "/admin/verify",
        Auth::Admin,
        "application/json",
        &[],
        "Verify the whole ledger in place and record the result"
    ),
    route!(
        Handler::Query(QueryRoute::Healthz),
        "GET",
        "/healthz",
        Auth::None,
        "application/json",
        &[],
        "Liveness, schema version, ledger size; 503 with config_errors when a variable is bad"
    ),
    route!(
        Handler::Query(QueryRoute::OpenApi),
        "GET",
        "/api/v1/openapi.json",
        Auth::None,
        "application/json",
        &[],
        "This document"
    ),
    route!(
        Handler::Query(QueryRoute::Events),
        "GET",
        "/api/v1/events",
        Auth::Token,
        "application/json",
        EVENT_FILTERS,
        "Events, oldest first, keyset paged"
    ),
    route!(
        Handler::Query(QueryRoute::Pipeline),
        "GET",
        "/api/v1/pipelines/{forge}/{id}",
        Auth::Token,
        "application/json",
        &[],
        "A pipeline's provenance: who triggered, canceled, retried, played, deleted, with evidence"
    ),
    route!(
        Handler::Query(QueryRoute::Stats),
        "GET",
        "/api/v1/stats",
        Auth::Token,
        "application/json",
        &[],
        "Deliveries by outcome, events, latest checkpoint (unscoped tokens)"
    ),
    route!(
        Handler::Query(QueryRoute::Ledger),
        "GET",
        "/api/v1/ledger",
        Auth::Token,
        "application/json",
        &[],
        "Ledger size, latest checkpoint, verifier key, last verification"
    ),
    route!(
        Handler::Query(QueryRoute::CreateToken),
        "POST",
        "/api/v1/tokens",
        Auth::Admin,
        "application/json",
        &[],
        "Create a read token (shown once)"
    ),
    route!(
        Handler::Query(QueryRoute::Checkpoint),
        "GET",
        "/api/v1/checkpoint",
        Auth::Token,
        "text/plain",
        &[],
        "The latest signed checkpoint"
    ),
    route!(
        Handler::Query(QueryRoute::Key),
        "GET",
        "/api/v1/key",
        Auth::Token,
        "text/plain",
        &[],
        "The verifier key"
    ),
    route!(
        Handler::Query(QueryRoute::InclusionProof),
        "GET",
        "/api/v1/proof/inclusion",
        Auth::Token,
        "application/json",
        &[("seq", "event seq"), ("id", "event id"), ("size", "tree size")],
        "Inclusion proof"
    ),
    route!(
        Handler::Query(QueryRoute::ConsistencyProof),
        "GET",
        "/api/v1/proof/consistency",
        Auth::Token,
        "application/json",
        &[("from", "older size"), ("to", "newer size")],
        "Consistency proof"
    ),
    route!(
        Handler::Query(QueryRoute::Export),
        "GET",
        "/api/v1/export",
        Auth::Token,
        "text/csv",
        EXPORT_PARAMS,
        "Export as CSV or JSON Lines (streamed) or a verifiable bundle"
    ),
    route!(
        Handler::Query(QueryRoute::Findings),
        "GET",
        "/api/v1/findings",
        Auth::Token,
        "application/json",
        crate::findings::list::PARAMS,
        "Findings (finding.raised events), newest first, by rule, severity, actor, project"
    ),
    route!(
        Handler::Query(QueryRoute::V4InstanceEvents),
        "GET",
        "/api/v4/audit_events",
        Auth::Token,
        "application/json",
        V4_LIST,
        "GitLab-compatible: all audit events"
    ),
    route!(
        Handler::Query(QueryRoute::V4InstanceEvent),
        "GET",
        "/api/v4/audit_events/{id}",
        Auth::Token,
        "application/json",
        &[],
        "GitLab-compatible: one audit event"
    ),
    route!(
        Handler::Query(QueryRoute::V4ProjectEvents),
        "GET",
        "/api/v4/projects/{id}/audit_events",
        Auth::Token,
        "application/json",
        V4_LIST,
        "GitLab-compatible: a project's audit events"
    ),
    route!(
        Handler::Query(QueryRoute::V4ProjectEvent),
        "GET",
        "/api/v4/projects/{id}/audit_events/{event_id}",
        Auth::Token,
        "application/json",
        &[],
        "GitLab-compatible: one of a project's audit events"
    ),
    route!(
        Handler::Query(QueryRoute::V4GroupEvents),
        "GET",
        "/api/v4/groups/{id}/audit_events",
        Auth::Token,
        "application/json",
        V4_LIST,
        "GitLab-compatible: a group's audit events (group by path)"
    ),
    route!(
        Handler::Query(QueryRoute::V4GroupEvent),
        "GET",
        "/api/v4/groups/{id}/audit_events/{event_id}",
        Auth::Token,
        "application/json",
        &[],
        "GitLab-compatible: one of a group's audit events"
    ),
    route!(
        Handler::Query(QueryRoute::UiAuditLog),
        "GET",
        "/ui",
        Auth::Token,
        "text/html",
        EVENT_FILTERS,
        "Audit log page"
    ),
    route!(
        Handler::Query(QueryRoute::UiLoginForm),
        "GET",
        "/ui/login",
        Auth::None,
        "text/html",
        &[],
        "Login page"
    ),
    route!(
        Handler::Query(QueryRoute::UiLogin),
        "POST",
        "/ui/login",
        Auth::None,
        "text/html",
        &[],
        "Log in with an API token (sets an HttpOnly cookie)"
    ),
    route!(
        Handler::Query(QueryRoute::UiLogout),
        "POST",
        "/ui/logout",
        Auth::None,
        "text/html",
        &[],
        "Log out"
    ),
    route!(
        Handler::Query(QueryRoute::UiPipeline),
        "GET",
        "/ui/pipelines/{forge}/{id}",
        Auth::Token,
        "text/html",
        &[],
        "Pipeline provenance page"
    ),
    route!(
        Handler::Query(QueryRoute::UiJob),
        "GET",
        "/ui/jobs/{forge}/{id}",
        Auth::Token,
        "text/html",
        &[],
        "Job page"
    ),
    route!(
        Handler::Query(QueryRoute::UiActor),
        "GET",
        "/ui/actors/{username}",
        Auth::Token,
        "text/html",
        &[("cursor", "older page")],
        "Everything one user did"
    ),
    route!(
        Handler::Query(QueryRoute::UiFindings),
        "GET",
        "/ui/findings",
        Auth::Token,
        "text/html",
        crate::findings::list::PARAMS,
        "Web UI: findings, filtered by rule, actor, project and severity"
    ),
    route!(
        Handler::Query(QueryRoute::UiLedger),
        "GET",
        "/ui/ledger",
        Auth::Token,
        "text/html",
        &[],
        "Ledger page"
    ),
    route!(
        Handler::Query(QueryRoute::UiAsset),
        "GET",
        "/ui/assets/{file}",
        Auth::None,
        "text/plain",
        &[],
        "The UI's script and style"
    ),
];

/// What a path matched, for a component whose handlers are `H`.
#[derive(Debug)]
pub enum Found<H> {
    Route(Matched<H>),
    /// The path exists with other methods.
    WrongMethod(Vec<&'static str>),
    /// The path matches a route, but this parameter's segment is not valid percent-encoded
    /// UTF-8: 400, naming it.
    MalformedSegment(&'static str),
    NotFound,
}

/// A matched route: its handler, who may call it, and its path parameters (decoded).
#[derive(Debug)]
pub struct Matched<H> {
    pub handler: H,
    pub route: &'static Route,
    pub params: Vec<(&'static str, String)>,
}

impl<H> Matched<H> {
    /// A path parameter by its template name (`""` if the template has none by that name).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// The route for this request among those `own` (e.g. `Handler::query`) accepts: the
/// routes of one component.
pub fn find<H>(method: &str, path: &str, own: fn(Handler) -> Option<H>) -> Found<H> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let mut methods = Vec::new();
    for r in ROUTES {
        let Some(handler) = own(r.handler) else {
            continue;
        };
        match matches(r.path, path) {
            Some(Ok(params)) if r.method == method => {
                return Found::Route(Matched {
                    handler,
                    route: r,
                    params,
                });
            }
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
type Segments = Result<Vec<(&'static str, String)>, &'static str>;

fn matches(template: &'static str, path: &str) -> Option<Segments> {
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
            Auth::Secret {
                header: "Authorization",
                ..
            } => json!([{"bearer": []}]),
            // One scheme per header (see `components` below), named after it.
            Auth::Secret { header, .. } | Auth::BodySignature { header, .. } => json!([{ header: [] }]),
            Auth::Token | Auth::Admin => json!([{"bearer": []}, {"privateToken": []}, {"cookie": []}]),
        };
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method.to_ascii_lowercase(), r.path.replace(['/', '{', '}', '.', '-'], "_")),
            "tags": [r.component()],
            "parameters": parameters,
            "security": security,
            "responses": {"200": {"description": "OK", "content": {r.produces: {}}}, "default": {"description": "an error: {\"error\", \"message\"}", "content": {JSON: {}}}},
        });
        match r.auth {
            Auth::Secret { header, .. } => op["description"] = json!(format!("Authenticated by the {header} header.")),
            Auth::BodySignature { header, .. } => {
                op["description"] = json!(format!(
                    "Authenticated by the {header} header: an HMAC-SHA256 of the body."
                ))
            }
            _ => {}
        }
        if r.auth == Auth::Admin {
            op["description"] = json!("Admin token only.");
        }
        entry[r.method.to_ascii_lowercase()] = op;
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "pipetrail", "version": env!("CARGO_PKG_VERSION"), "description": "Immutable, provable audit trail of CI/CD pipelines."},
        "paths": paths,
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "privateToken": {"type": "apiKey", "in": "header", "name": "PRIVATE-TOKEN"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "pipetrail_token"},
        }},
    });
    for r in ROUTES {
        if let Auth::Secret { header, .. } | Auth::BodySignature { header, .. } = r.auth
            && header != "Authorization"
        {
            doc["components"]["securitySchemes"][header] = json!({"type": "apiKey", "in": "header", "name": header});
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: Found<QueryRoute>) -> (QueryRoute, Vec<(&'static str, String)>) {
        match f {
            Found::Route(m) => (m.handler, m.params),
            other => panic!("no match: {other:?}"),
        }
    }

    #[test]
    fn templates_match_segments() {
        let (h, p) = params(find("GET", "/api/v1/pipelines/gitlab/287/", Handler::query));
        assert_eq!(h, QueryRoute::Pipeline);
        assert_eq!(p, vec![("forge", "gitlab".to_string()), ("id", "287".to_string())]);
        let (h, p) = params(find("GET", "/api/v4/projects/grp%2Fapp/audit_events", Handler::query));
        assert_eq!((h, p[0].1.as_str()), (QueryRoute::V4ProjectEvents, "grp/app"));
        // A path segment is not form data: `+` stays a plus sign.
        let (_, p) = params(find("GET", "/api/v4/projects/grp%2Fc+%2B/audit_events", Handler::query));
        assert_eq!(p[0].1, "grp/c++");
        assert!(matches!(
            find("GET", "/api/v4/projects/grp%zz/audit_events", Handler::query),
            Found::MalformedSegment("id")
        ));
        assert!(matches!(find("DELETE", "/api/v1/events", Handler::query), Found::WrongMethod(m) if m == ["GET"]));
        assert!(matches!(
            find("GET", "/api/v1/pipelines/gitlab", Handler::query),
            Found::NotFound
        ));
        // Another component's route is not found here.
        assert!(matches!(
            find("GET", "/api/v1/events", Handler::ingest),
            Found::NotFound
        ));
        assert!(matches!(
            find("POST", "/hooks/gitlab", Handler::ingest),
            Found::Route(Matched {
                handler: IngestRoute::GitlabHooks,
                ..
            })
        ));
    }

    /// One row per handler: no handler is served twice, none is missing from the table.
    #[test]
    fn every_handler_has_exactly_one_row() {
        let mut handlers: Vec<Handler> = ROUTES.iter().map(|r| r.handler).collect();
        let rows = handlers.len();
        handlers.sort_by_key(|h| format!("{h:?}"));
        handlers.dedup();
        assert_eq!(handlers.len(), rows, "a handler serves two rows");
        assert_eq!(rows, 7 + 5 + 29, "ingest, retention and query handlers");
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
