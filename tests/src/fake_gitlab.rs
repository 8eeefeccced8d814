//! A fake GitLab REST API for the reconciler, backfill and connect tests. It answers with
//! bodies and headers shaped as GitLab documents them ("Pipelines API", "Jobs API",
//! "Projects API", "Project webhooks API"): `PRIVATE-TOKEN` auth, offset pagination with
//! `X-Total`, `X-Next-Page` and `Link`, 404 `{"message":"404 Not found"}` for what does not
//! exist (a deleted pipeline), and 429 with `Retry-After` when told to rate-limit.
//! Tests edit its state directly (`state()`), as GitLab itself would change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

#[derive(Default)]
pub struct State {
    pub token: String,
    /// id → (path, group id)
    pub projects: BTreeMap<u64, (String, u64)>,
    /// subgroup id → parent group id
    pub subgroups: BTreeMap<u64, u64>,
    /// pipeline id → (project id, the single-pipeline object)
    pub pipelines: BTreeMap<u64, (u64, Value)>,
    /// pipeline id → its jobs, oldest first
    pub jobs: BTreeMap<u64, Vec<Value>>,
    /// project id → its hooks
    pub hooks: BTreeMap<u64, Vec<Value>>,
    /// The next this-many requests are answered 429.
    pub rate_limit_next: usize,
    /// Every request: "METHOD path?query".
    pub requests: Vec<String>,
}

pub struct FakeGitlab {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeGitlab {
    pub fn start(token: &str) -> FakeGitlab {
        let state = Arc::new(Mutex::new(State {
            token: token.into(),
            ..Default::default()
        }));
        let shared = state.clone();
        let url = crate::fake_http::serve(move |r| {
            answer(
                &mut shared.lock().unwrap(),
                &r.method,
                &r.target,
                r.header("private-token"),
                r.header("host").unwrap_or(""),
                &r.body,
            )
        });
        FakeGitlab { url, state }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

use crate::fake_http::Answer;

fn not_found() -> Answer {
    (404, vec![], json!({"message": "404 Not found"}).to_string())
}

fn answer(s: &mut State, method: &str, target: &str, token: Option<&str>, host: &str, body: &[u8]) -> Answer {
    s.requests.push(format!("{method} {target}"));
    if s.rate_limit_next > 0 {
        s.rate_limit_next -= 1;
        return (
            429,
            vec![("Retry-After".into(), "1".into())],
            json!({"message": "429 Too Many Requests"}).to_string(),
        );
    }
    if token != Some(s.token.as_str()) {
        return (401, vec![], json!({"message": "401 Unauthorized"}).to_string());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let q: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":").replace("%3a", ":")))
        .collect();
    let segs: Vec<&str> = path.trim_start_matches("/api/v4/").split('/').collect();
    let num = |i: usize| segs.get(i).and_then(|s| s.parse::<u64>().ok());
    match (method, segs.as_slice()) {
        ("GET", ["projects", _, "pipelines"]) => {
            let project = num(1).unwrap_or(0);
            let mut list: Vec<&Value> = s
                .pipelines
                .values()
                .filter(|(p, v)| {
                    *p == project
                        && q.get("updated_after")
                            .is_none_or(|after| v["updated_at"].as_str().unwrap_or("") > after.as_str())
                })
                .map(|(_, v)| v)
                .collect();
            if q.get("order_by").map(String::as_str) == Some("updated_at") {
                list.sort_by_key(|v| v["updated_at"].as_str().unwrap_or("").to_string());
            } else {
                list.reverse();
            }
            // The list shows fewer fields than the single pipeline (no user), as GitLab's does.
            let items: Vec<Value> = list
                .iter()
                .map(|v| {
                    json!({"id": v["id"], "iid": v["iid"], "project_id": v["project_id"], "sha": v["sha"], "ref": v["ref"], "status": v["status"], "source": v["source"], "created_at": v["created_at"], "updated_at": v["updated_at"], "web_url": v["web_url"]})
                })
                .collect();
            paginate(host, path, &q, items)
        }
        ("GET", ["projects", _, "pipelines", _]) => match num(3).and_then(|id| s.pipelines.get(&id)) {
            Some((p, v)) if Some(*p) == num(1) => (200, vec![], v.to_string()),
            _ => not_found(),
        },
        ("GET", ["projects", _, "pipelines", _, "jobs"]) => match num(3) {
            Some(id) if s.pipelines.get(&id).is_some_and(|(p, _)| Some(*p) == num(1)) => {
                let mut jobs = s.jobs.get(&id).cloned().unwrap_or_default();
                if q.get("include_retried").map(String::as_str) != Some("true") {
                    // Without include_retried GitLab shows only the latest attempt of each name.
                    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
                    for j in jobs {
                        latest.insert(j["name"].as_str().unwrap_or("").to_string(), j);
                    }
                    jobs = latest.into_values().collect();
                }
                jobs.sort_by_key(|j| std::cmp::Reverse(j["id"].as_u64()));
                paginate(host, path, &q, jobs)
            }
            _ => not_found(),
        },
        ("GET", ["groups", _, "projects"]) => {
            let group = num(1).unwrap_or(0);
            let subgroups = q.get("include_subgroups").map(String::as_str) == Some("true");
            let within = |mut g: u64| loop {
                if g == group {
                    return true;
                }
                match s.subgroups.get(&g) {
                    Some(parent) if subgroups => g = *parent,
                    _ => return false,
                }
            };
            let items: Vec<Value> = s
                .projects
                .iter()
                .filter(|(_, (_, g))| within(*g))
                .map(|(id, (path, _))| json!({"id": id, "path_with_namespace": path, "web_url": format!("http://{host}/{path}")}))
                .collect();
            paginate(host, path, &q, items)
        }
        ("GET", ["projects", _]) => match num(1).and_then(|p| s.projects.get(&p).map(|(path, _)| (p, path))) {
            Some((id, path)) => (
                200,
                vec![],
                json!({"id": id, "path_with_namespace": path, "web_url": format!("http://{host}/{path}")}).to_string(),
            ),
            None => not_found(),
        },
        ("GET", ["projects", _, "hooks"]) => match num(1).filter(|p| s.projects.contains_key(p)) {
            Some(p) => (
                200,
                vec![],
                Value::Array(s.hooks.get(&p).cloned().unwrap_or_default()).to_string(),
            ),
            None => not_found(),
        },
        ("POST", ["projects", _, "hooks"]) => match num(1).filter(|p| s.projects.contains_key(p)) {
            Some(p) => {
                let mut hook: Value = serde_json::from_slice(body).unwrap_or(json!({}));
                let id = s.hooks.values().map(Vec::len).sum::<usize>() as u64 + 1;
                hook["id"] = json!(id);
                hook["project_id"] = json!(p);
                // GitLab never shows a hook's secret token back.
                hook.as_object_mut().unwrap().remove("token");
                s.hooks.entry(p).or_default().push(hook.clone());
                (201, vec![], hook.to_string())
            }
            None => not_found(),
        },
        ("PUT", ["projects", _, "hooks", _]) => {
            let (Some(p), Some(h)) = (num(1), num(3)) else {
                return not_found();
            };
            let update: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            match s
                .hooks
                .get_mut(&p)
                .and_then(|hs| hs.iter_mut().find(|x| x["id"] == json!(h)))
            {
                Some(hook) => {
                    for (k, v) in update.as_object().into_iter().flatten() {
                        if k != "token" {
                            hook[k] = v.clone();
                        }
                    }
                    (200, vec![], hook.to_string())
                }
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// Offset pagination as GitLab does it: `page`, `per_page` (default 20), and the
/// `X-Total`, `X-Total-Pages`, `X-Page`, `X-Per-Page`, `X-Next-Page` and `Link` headers.
fn paginate(host: &str, path: &str, q: &BTreeMap<String, String>, items: Vec<Value>) -> Answer {
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let link_for = |n: usize| {
        let mut pairs: Vec<String> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "page")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.push(format!("page={n}"));
        format!("<http://{host}{path}?{}>", pairs.join("&"))
    };
    let mut links = Vec::new();
    let next = (page < pages).then_some(page + 1);
    if let Some(n) = next {
        links.push(format!("{}; rel=\"next\"", link_for(n)));
    }
    links.push(format!("{}; rel=\"first\"", link_for(1)));
    links.push(format!("{}; rel=\"last\"", link_for(pages)));
    let headers = vec![
        ("X-Total".into(), total.to_string()),
        ("X-Total-Pages".into(), pages.to_string()),
        ("X-Page".into(), page.to_string()),
        ("X-Per-Page".into(), per_page.to_string()),
        ("X-Next-Page".into(), next.map(|n| n.to_string()).unwrap_or_default()),
        ("Link".into(), links.join(", ")),
    ];
    (200, headers, Value::Array(slice).to_string())
}
