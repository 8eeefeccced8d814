//! The `query` component: the read side, for scripts and people. Routes come from the one
//! table in `core::routes` (which also generates `/api/v1/openapi.json`):
//! - `api`: `/api/v1` JSON (events, provenance, stats, tokens, checkpoint, key, proofs,
//!   ledger, bundles);
//! - `stream`: CSV and JSON Lines exports, produced page by page while the client reads;
//! - `v4`: the GitLab-compatible `audit_events` API;
//! - `ui`, `html`, `timeline`: the server-rendered web UI.
//!
//! Every route but `/healthz`, the OpenAPI document, login and assets needs a token; a
//! project-scoped token never sees another project.

mod api;
mod html;
mod stream;
mod timeline;
mod ui;
mod v4;

use http::{HeaderValue, Response, StatusCode};
use http_body_util::Either;
use pipetrail_core::params::{self, ParamError};
use pipetrail_core::routes::{self, Found, Handler, QueryRoute};
use pipetrail_core::sql::DbError;
use pipetrail_platform::{self as platform, Caller, Db, Request, error, json};
use spin_sdk::http_service;

/// A page or JSON document (`Left`), or a streamed export (`Right`).
type Body = Either<String, stream::EventStream>;

#[http_service]
async fn handle(req: Request) -> Response<Body> {
    let db = match Db::open().await {
        Ok(db) => db,
        Err(e) => return platform::db_failure(&e).map(Either::Left),
    };
    match route(db, req).await {
        Ok(r) => r,
        Err(e) => platform::db_failure(&e).map(Either::Left),
    }
}

fn left(r: Response<String>) -> Result<Response<Body>, DbError> {
    Ok(r.map(Either::Left))
}

async fn route(db: Db, req: Request) -> Result<Response<Body>, DbError> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let route = match routes::find(method.as_str(), &path, Handler::query) {
        Found::Route(m) => m,
        Found::WrongMethod(allowed) => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("use {}", allowed.join(" or ")),
            );
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert("allow", v);
            }
            return left(r);
        }
        Found::MalformedSegment(name) => {
            return left(api::bad_param(&ParamError::new(
                name,
                "not valid percent-encoded UTF-8",
            )));
        }
        Found::NotFound => {
            return left(error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {method} {path}"),
            ));
        }
    };
    let arg = |name: &str| route.param(name);
    let caller = match platform::admit(&db, route.route.auth, req.headers()).await {
        Ok(c) => c,
        // A page asks for the token it lacks; an API answers 401.
        Err(r) if path.starts_with("/ui") && r.status() == StatusCode::UNAUTHORIZED => {
            let here = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            return left(ui::to_login(&here));
        }
        Err(r) => return left(r),
    };
    let pairs = match params::parse_query(&query) {
        Ok(p) => p,
        Err(e) => return left(api::bad_param(&e)),
    };
    let base = platform::spin_header(req.headers(), "spin-full-url")
        .map(|u| u.split('?').next().unwrap_or(u).to_string())
        .unwrap_or_else(|| path.clone());
    let reply = match route.handler {
        QueryRoute::Healthz => api::healthz(&db).await?,
        QueryRoute::OpenApi => json(StatusCode::OK, &routes::openapi()),
        QueryRoute::UiLoginForm => {
            let next = pairs.iter().find(|(k, _)| k == "next").map(|(_, v)| v.as_str());
            ui::login_form(next, None)
        }
        QueryRoute::UiLogin => ui::login(&db, req).await?,
        QueryRoute::UiLogout => ui::logout(),
        QueryRoute::UiAsset => ui::asset(arg("file")),
        QueryRoute::Events => api::events(&db, &caller, &pairs).await?,
        QueryRoute::Pipeline => api::pipeline(&db, &caller, arg("forge"), arg("id")).await?,
        QueryRoute::Stats => match caller.scope() {
            // Counts cover every project: not for a token limited to some.
            Some(_) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "stats cover all projects; use an unscoped token",
            ),
            None => api::stats(&db).await?,
        },
        QueryRoute::Ledger => api::ledger(&db).await?,
        QueryRoute::CreateToken => api::create_token(&db, &caller, req).await?,
        QueryRoute::Checkpoint => api::checkpoint(&db).await?,
        QueryRoute::Key => api::key(&db).await?,
        QueryRoute::InclusionProof => api::inclusion(&db, &caller, &pairs).await?,
        QueryRoute::ConsistencyProof => api::consistency(&db, &pairs).await?,
        QueryRoute::Export => return export(db, &caller, &pairs).await,
        QueryRoute::Findings => api::findings(&db, &caller, &pairs).await?,
        QueryRoute::V4InstanceEvents => v4::list(&db, &caller, v4::Entity::Instance, &pairs, &base).await?,
        QueryRoute::V4InstanceEvent => v4::one(&db, &caller, v4::Entity::Instance, arg("id")).await?,
        QueryRoute::V4ProjectEvents => {
            v4::list(&db, &caller, v4::Entity::Project(arg("id").into()), &pairs, &base).await?
        }
        QueryRoute::V4ProjectEvent => {
            v4::one(&db, &caller, v4::Entity::Project(arg("id").into()), arg("event_id")).await?
        }
        QueryRoute::V4GroupEvents => v4::list(&db, &caller, v4::Entity::Group(arg("id").into()), &pairs, &base).await?,
        QueryRoute::V4GroupEvent => v4::one(&db, &caller, v4::Entity::Group(arg("id").into()), arg("event_id")).await?,
        QueryRoute::UiAuditLog => ui::audit_log(&db, &caller, &pairs).await?,
        QueryRoute::UiPipeline => ui::pipeline(&db, &caller, arg("forge"), arg("id")).await?,
        QueryRoute::UiJob => ui::job(&db, &caller, arg("forge"), arg("id")).await?,
        QueryRoute::UiActor => ui::actor(&db, &caller, arg("username"), &pairs).await?,
        QueryRoute::UiFindings => ui::findings(&db, &caller, &pairs).await?,
        QueryRoute::UiLedger => ui::ledger(&db).await?,
    };
    left(reply)
}

/// `GET /api/v1/export`: `format=csv|jsonl` streams every matching event (no page limit);
/// `format=bundle` is a verifiable bundle (see `api::bundle_export`).
async fn export(db: Db, caller: &Caller, pairs: &[(String, String)]) -> Result<Response<Body>, DbError> {
    let format = pairs.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str());
    let (fmt, content_type, ext) = match format {
        Some("csv") => (stream::Format::Csv, "text/csv; charset=utf-8; header=present", "csv"),
        Some("jsonl") => (stream::Format::Jsonl, "application/x-ndjson", "jsonl"),
        Some("bundle") => return left(api::bundle_export(&db, caller, pairs).await?),
        _ => {
            return left(api::bad_param(&ParamError::new(
                "format",
                "expected csv, jsonl or bundle",
            )));
        }
    };
    let filters: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "format" | "limit"))
        .cloned()
        .collect();
    let mut filter = match params::event_filter(&filters) {
        Ok((f, _)) => f,
        Err(e) => return left(api::bad_param(&e)),
    };
    filter.scope = caller.scope();
    let mut res = Response::new(Either::Right(stream::EventStream::new(db, filter, fmt)));
    let h = res.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"pipetrail-events.{ext}\"")) {
        h.insert("content-disposition", v);
    }
    Ok(res)
}
