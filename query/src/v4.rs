//! `/api/v4/...audit_events`: the GitLab-compatible read API (core::gitlab_compat has the
//! mapping). Offset pagination sends GitLab's headers (`X-Total`, `X-Total-Pages`, `X-Page`,
//! `X-Per-Page`, `X-Next-Page`, `X-Prev-Page`, `Link`); keyset pagination sends `Link` with a
//! cursor, as GitLab does. Scope works as everywhere: another project's events, counts and
//! pages do not exist for a scoped token.

use http::{HeaderValue, Response, StatusCode};
use pipetrail_core::gitlab_compat::{self, Paging};
use pipetrail_core::params::parse_u64;
use pipetrail_core::store::{self, EventFilter};
use pipetrail_platform::{Caller, Db, error, json};
use serde_json::Value;

use crate::api::{Reply, bad_param};

/// What the request is about: the whole instance, a project, or a group (by path).
pub enum Entity {
    Instance,
    Project(String),
    Group(String),
}

fn not_found() -> Response<String> {
    // GitLab's own body for a missing resource.
    json(StatusCode::NOT_FOUND, &serde_json::json!({"message": "404 Not found"}))
}

fn narrow(filter: &mut EventFilter, entity: &Entity, caller: &Caller) {
    match entity {
        Entity::Instance => {}
        // A GitLab project or group is GitLab's: a GitHub repository with the same id or
        // path is another thing (it is listed at the instance level, as its own entity).
        Entity::Project(p) => {
            filter.project = Some(p.clone());
            filter.forge = Some("gitlab".into());
        }
        Entity::Group(g) => {
            filter.group = Some(g.clone());
            filter.forge = Some("gitlab".into());
        }
    }
    filter.scope = caller.scope();
}

/// Past this many matching records GitLab's API sends no `X-Total`, and neither does this.
const TOTAL_LIMIT: u64 = 10_000;

pub async fn list(db: &Db, caller: &Caller, entity: Entity, pairs: &[(String, String)], base: &str) -> Reply {
    if let Entity::Group(g) = &entity
        && g.parse::<u64>().is_ok()
    {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "pipetrail knows groups by path: use /api/v4/groups/<url-encoded path>/audit_events",
        ));
    }
    let (mut filter, paging) = match gitlab_compat::list_params(pairs) {
        Ok(v) => v,
        Err(e) => return Ok(bad_param(&e)),
    };
    narrow(&mut filter, &entity, caller);
    let per_page = match paging {
        Paging::Offset { per_page, .. } | Paging::Keyset { per_page } => per_page,
    };
    let mut found = store::list_events(db, &filter, per_page + 1).await?;
    let more = found.len() > per_page;
    found.truncate(per_page);
    let body: Vec<Value> = found.iter().map(gitlab_compat::audit_event).collect();
    let mut res = json(StatusCode::OK, &Value::Array(body));
    let link = |extra: &[(&str, String)]| {
        let mut kept: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "page" | "cursor" | "per_page" | "pagination"))
            .map(|(k, v)| format!("{k}={}", pipetrail_core::encoding::url_encode(v)))
            .collect();
        kept.push(format!("per_page={per_page}"));
        kept.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        format!("<{base}?{}>", kept.join("&"))
    };
    let mut headers: Vec<(&str, String)> = Vec::new();
    match paging {
        Paging::Offset { page, per_page } => {
            // As GitLab: past 10,000 records no total, no page count and no last link
            // ("Pagination response headers"), so a page never waits on a count of millions.
            let counted = store::count_events_up_to(db, &filter, TOTAL_LIMIT + 1).await?;
            let total = (counted <= TOTAL_LIMIT).then_some(counted);
            let pages = total.map(|t| t.div_ceil(per_page as u64).max(1));
            let next = more.then(|| page + 1);
            let prev = (page > 1).then(|| page - 1);
            let mut links = Vec::new();
            if let Some(n) = next {
                links.push(format!("{}; rel=\"next\"", link(&[("page", n.to_string())])));
            }
            if let Some(p) = prev {
                links.push(format!("{}; rel=\"prev\"", link(&[("page", p.to_string())])));
            }
            links.push(format!("{}; rel=\"first\"", link(&[("page", "1".into())])));
            if let (Some(total), Some(pages)) = (total, pages) {
                links.push(format!("{}; rel=\"last\"", link(&[("page", pages.to_string())])));
                headers.extend([("x-total", total.to_string()), ("x-total-pages", pages.to_string())]);
            }
            headers.extend([
                ("x-page", page.to_string()),
                ("x-per-page", per_page.to_string()),
                ("x-next-page", next.map(|n| n.to_string()).unwrap_or_default()),
                ("x-prev-page", prev.map(|p| p.to_string()).unwrap_or_default()),
                ("link", links.join(", ")),
            ]);
        }
        Paging::Keyset { .. } => {
            if more && let Some(last) = found.last() {
                headers.push((
                    "link",
                    format!(
                        "{}; rel=\"next\"",
                        link(&[("pagination", "keyset".into()), ("cursor", last.seq.to_string())])
                    ),
                ));
            }
        }
    }
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            res.headers_mut().insert(k, v);
        }
    }
    Ok(res)
}

pub async fn one(db: &Db, caller: &Caller, entity: Entity, id: &str) -> Reply {
    let Ok(id) = parse_u64("id", id) else {
        return Ok(not_found());
    };
    let Some(seq) = id.checked_sub(1) else {
        return Ok(not_found());
    };
    let mut filter = EventFilter {
        after_seq: seq.checked_sub(1),
        ..Default::default()
    };
    narrow(&mut filter, &entity, caller);
    let found = store::list_events(db, &filter, 1).await?;
    match found.first() {
        Some(e) if e.seq == seq => Ok(json(StatusCode::OK, &gitlab_compat::audit_event(e))),
        _ => Ok(not_found()),
    }
}
