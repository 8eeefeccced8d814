//! `pipetrail gitlab ...`: the native tool's side of the GitLab API client. The endpoints,
//! pagination and a pipeline's snapshot are the reconciler's own
//! (`core::sources::gitlab_api::client`); this file is the blocking transport and its retry
//! policy. `backfill` imports history into a running app (the same `{"pipeline", "jobs"}`
//! snapshot the reconciler records); `connect` installs pipetrail's webhook on every
//! project of a group.
//!
//! It is polite to GitLab: one request at a time, a 429's `Retry-After` honoured, other
//! failures retried with exponential backoff, every request with a timeout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use pipetrail_core::sources::gitlab_api::client::{self, ApiResponse, CrawlError, Endpoints, without_query};
use pipetrail_core::sources::gitlab_api::{next_page, retry_after};
use pipetrail_core::sql::block_on;
use serde_json::{Value, json};

type Headers = Vec<(String, String)>;
/// Status, headers and body text of one answer.
type Answer = (u16, Headers, String);

pub struct Gitlab {
    endpoints: Endpoints,
    token: String,
    agent: ureq::Agent,
}

pub struct Page {
    pub items: Vec<Value>,
    pub total: Option<u64>,
    pub next: Option<String>,
}

impl Gitlab {
    pub fn new(base: &str, token: String) -> Gitlab {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Gitlab {
            endpoints: Endpoints::new(base),
            token,
            agent,
        }
    }

    pub fn api(&self, path: &str) -> String {
        self.endpoints.url(path)
    }

    /// One request with retries. Returns (status, headers, body); 404 is an answer.
    fn request(&self, method: &str, url: &str, body: Option<&Value>) -> anyhow::Result<Answer> {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=6 {
            let res = match (method, body) {
                ("GET", _) => self.agent.get(url).header("PRIVATE-TOKEN", &self.token).call(),
                ("POST", Some(b)) => self
                    .agent
                    .post(url)
                    .header("PRIVATE-TOKEN", &self.token)
                    .header("Content-Type", "application/json")
                    .send(b.to_string()),
                ("PUT", Some(b)) => self
                    .agent
                    .put(url)
                    .header("PRIVATE-TOKEN", &self.token)
                    .header("Content-Type", "application/json")
                    .send(b.to_string()),
                _ => bail!("unsupported request {method}"),
            };
            let shown = without_query(url);
            match res {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let headers: Vec<(String, String)> = r
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let text = r.body_mut().with_config().limit(64 << 20).read_to_string()?;
                    if status == 429 {
                        let wait = retry_after(&headers);
                        eprintln!("\npipetrail: GitLab rate-limits us; waiting {wait}s as Retry-After says");
                        std::thread::sleep(Duration::from_secs(wait));
                        continue;
                    }
                    if status >= 500 && attempt < 6 {
                        eprintln!("\npipetrail: {method} {shown} answered {status}; retrying in {delay:?}");
                    } else {
                        return Ok((status, headers, text));
                    }
                }
                Err(e) if attempt < 6 => eprintln!("\npipetrail: {method} {shown}: {e}; retrying in {delay:?}"),
                Err(e) => return Err(e).with_context(|| format!("{method} {shown}")),
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(60));
        }
        bail!("{method} {}: giving up", without_query(url))
    }

    /// One GET for the shared client: a 2xx or a 404 is an answer, anything else an error
    /// naming it (a token without access is said plainly).
    pub fn fetch(&self, url: &str) -> anyhow::Result<ApiResponse> {
        let (status, headers, text) = self.request("GET", url, None)?;
        match status {
            200..=299 | 404 => Ok(ApiResponse {
                status,
                headers,
                body: text.into_bytes(),
            }),
            401 | 403 => bail!("GitLab answered {status}: the token lacks access ({})", text.trim()),
            _ => bail!(
                "GitLab answered {status} to GET {}: {}",
                without_query(url),
                text.trim()
            ),
        }
    }

    /// A project by id or path; `None` when GitLab has none the token can see.
    pub fn project(&self, id_or_path: &str) -> anyhow::Result<Option<Value>> {
        let res = self.fetch(&self.endpoints.project(id_or_path))?;
        if res.status == 404 {
            return Ok(None);
        }
        serde_json::from_slice(&res.body)
            .map(Some)
            .context("GitLab's answer is not JSON")
    }

    /// One page of a list, with GitLab's count of all (`X-Total`) for progress.
    pub fn page(&self, url: &str) -> anyhow::Result<Page> {
        let res = self.fetch(url)?;
        if res.status == 404 {
            bail!("GitLab answered 404 to GET {}", without_query(url));
        }
        let v: Value = serde_json::from_slice(&res.body).context("GitLab's answer is not JSON")?;
        let total = res
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-total"))
            .and_then(|(_, v)| v.parse().ok());
        Ok(Page {
            items: v.as_array().cloned().unwrap_or_default(),
            total,
            next: next_page(&res.headers, url),
        })
    }

    /// Every item of a paginated list.
    pub fn all(&self, url: &str) -> anyhow::Result<Vec<Value>> {
        let mut get = async |u: &str| self.fetch(u);
        match block_on(client::all_pages(url, &mut get)) {
            Ok(Some(items)) => Ok(items),
            Ok(None) => bail!("GitLab answered 404 to GET {}", without_query(url)),
            Err(e) => Err(crawl_error(e)),
        }
    }

    /// One pipeline and all its jobs, as the app records it; `None` when it is gone.
    pub fn pipeline_snapshot(&self, project: u64, id: u64) -> anyhow::Result<Option<Value>> {
        let mut get = async |u: &str| self.fetch(u);
        block_on(client::pipeline_snapshot(&self.endpoints, project, id, &mut get)).map_err(crawl_error)
    }

    /// Projects of a group and its subgroups: (id, path).
    pub fn group_projects(&self, group: &str) -> anyhow::Result<Vec<(u64, String)>> {
        Ok(self
            .all(&self.endpoints.group_projects(group))?
            .iter()
            .filter_map(|p| {
                Some((
                    p["id"].as_u64()?,
                    p["path_with_namespace"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect())
    }
}

fn crawl_error(e: CrawlError<anyhow::Error>) -> anyhow::Error {
    match e {
        CrawlError::Get(e) => e,
        CrawlError::Malformed(m) => anyhow::anyhow!(m),
    }
}

pub struct Backfill {
    pub gitlab: Gitlab,
    pub app_url: String,
    pub admin_token: String,
    pub projects: Vec<(u64, String)>,
    pub since: Option<String>,
    pub state: PathBuf,
}

/// Imports every pipeline updated since the cursor (oldest first), project by project, and
/// saves the cursor after each one: an interrupted backfill resumes where it stopped.
pub fn backfill(b: &Backfill) -> anyhow::Result<()> {
    let mut state: Value = std::fs::read_to_string(&b.state)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({}));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let endpoint = format!("{}/ingest/gitlab-api", b.app_url.trim_end_matches('/'));
    let (mut pipelines, mut events) = (0u64, 0u64);
    for (project, path) in &b.projects {
        let cursor = state[project.to_string()]
            .as_str()
            .map(str::to_string)
            .or(b.since.clone());
        let url = b
            .gitlab
            .endpoints
            .pipelines_updated_after(*project, cursor.as_deref(), 100);
        let mut done = 0u64;
        let mut next = Some(url);
        while let Some(u) = next {
            let page = b.gitlab.page(&u)?;
            let total = page.total.unwrap_or(page.items.len() as u64);
            for item in &page.items {
                let Some(id) = item["id"].as_u64() else { continue };
                let Some(body) = b.gitlab.pipeline_snapshot(*project, id)? else {
                    continue;
                };
                let mut res = agent
                    .post(&endpoint)
                    .header("Authorization", &format!("Bearer {}", b.admin_token))
                    .header("Content-Type", "application/json")
                    .send(body.to_string())
                    .with_context(|| format!("POST {endpoint}"))?;
                let status = res.status().as_u16();
                let text = res.body_mut().read_to_string()?;
                if status != 200 {
                    bail!("{endpoint} answered {status}: {}", text.trim());
                }
                events += serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["events"].as_u64())
                    .unwrap_or(0);
                if let Some(updated) = item["updated_at"].as_str() {
                    state[project.to_string()] = json!(updated);
                    let tmp = b.state.with_extension("tmp");
                    std::fs::write(&tmp, state.to_string())?;
                    std::fs::rename(&tmp, &b.state)?;
                }
                done += 1;
                pipelines += 1;
                progress(path, done, total);
            }
            next = page.next;
        }
        if done == 0 {
            progress(path, 0, 0);
        }
        eprintln!();
    }
    println!("backfilled {pipelines} pipeline(s), {events} new event(s)");
    Ok(())
}

fn progress(label: &str, done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
    let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '-' }).collect();
    eprint!("\r{label:<30} [{bar}] {done}/{total} pipelines");
    let _ = std::io::stderr().flush();
}

pub struct Connect {
    pub gitlab: Gitlab,
    pub group: String,
    pub hook_url: String,
    pub secret: String,
    pub dry_run: bool,
}

/// Installs (or fixes) the project webhook on every project of the group and subgroups.
/// A hook with the same URL is pipetrail's: it is updated only when pipeline or job events
/// are off, so running connect twice changes nothing.
pub fn connect(c: &Connect) -> anyhow::Result<()> {
    let projects = c.gitlab.group_projects(&c.group)?;
    let wanted = json!({
        "url": c.hook_url,
        "token": c.secret,
        "pipeline_events": true,
        "job_events": true,
        "push_events": false,
        "enable_ssl_verification": true,
    });
    let (mut added, mut updated, mut unchanged) = (0, 0, 0);
    for (id, path) in &projects {
        let hooks = c
            .gitlab
            .all(&c.gitlab.api(&format!("/projects/{id}/hooks?per_page=100")))?;
        let existing = hooks.iter().find(|h| h["url"].as_str() == Some(c.hook_url.as_str()));
        let verb = match existing {
            None => "add",
            Some(h) if h["pipeline_events"] != json!(true) || h["job_events"] != json!(true) => "update",
            Some(_) => "keep",
        };
        let prefix = if c.dry_run && verb != "keep" { "would " } else { "" };
        println!("{prefix}{verb:<6} {path} (project {id})");
        match (verb, existing) {
            ("add", _) => {
                added += 1;
                if !c.dry_run {
                    let (status, _, text) =
                        c.gitlab
                            .request("POST", &c.gitlab.api(&format!("/projects/{id}/hooks")), Some(&wanted))?;
                    if status != 201 {
                        bail!("adding the hook to {path}: GitLab answered {status}: {}", text.trim());
                    }
                }
            }
            ("update", Some(h)) => {
                updated += 1;
                if !c.dry_run {
                    let hook = h["id"].as_u64().unwrap_or(0);
                    let url = c.gitlab.api(&format!("/projects/{id}/hooks/{hook}"));
                    let (status, _, text) = c.gitlab.request("PUT", &url, Some(&wanted))?;
                    if status != 200 {
                        bail!("updating the hook of {path}: GitLab answered {status}: {}", text.trim());
                    }
                }
            }
            _ => unchanged += 1,
        }
    }
    let tense = if c.dry_run { "would be " } else { "" };
    println!(
        "{} project(s): {added} {tense}added, {updated} {tense}updated, {unchanged} already connected",
        projects.len()
    );
    Ok(())
}
