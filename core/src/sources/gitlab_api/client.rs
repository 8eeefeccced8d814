//! The GitLab REST API client, one for the reconciler (async, Spin's outbound HTTP) and
//! `pipetrail gitlab` (blocking, ureq): the endpoints pipetrail reads, pagination, and the
//! snapshot of one pipeline with every job. The transport and what to do about a failure
//! (the reconciler backs off across runs, the tool retries in place) are the caller's: a
//! `get` it passes in.

use serde_json::{Value, json};

use super::next_page;
use crate::encoding::url_encode;

/// What one GET answered.
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a crawl stopped: the caller's `get` stopped it (its error), or GitLab answered
/// something that is not what its documentation says.
#[derive(Debug)]
pub enum CrawlError<E> {
    Get(E),
    Malformed(String),
}

/// The endpoints of one GitLab (`https://gitlab.example.com`, without `/api/v4`).
#[derive(Debug, Clone)]
pub struct Endpoints {
    api: String,
}

impl Endpoints {
    pub fn new(gitlab_url: &str) -> Self {
        Endpoints {
            api: format!("{}/api/v4", gitlab_url.trim_end_matches('/')),
        }
    }

    /// Any API path (`/projects/21/hooks`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// A project's pipelines updated after `cursor` (all when `None`), oldest first.
    pub fn pipelines_updated_after(&self, project: u64, cursor: Option<&str>, per_page: usize) -> String {
        let mut url = self.url(&format!(
            "/projects/{project}/pipelines?order_by=updated_at&sort=asc&per_page={per_page}"
        ));
        if let Some(c) = cursor {
            url.push_str(&format!("&updated_after={}", url_encode(c)));
        }
        url
    }

    pub fn pipeline(&self, project: u64, id: u64) -> String {
        self.url(&format!("/projects/{project}/pipelines/{id}"))
    }

    /// A pipeline's jobs, retried ones included (each attempt is a fact).
    pub fn pipeline_jobs(&self, project: u64, id: u64) -> String {
        self.url(&format!(
            "/projects/{project}/pipelines/{id}/jobs?include_retried=true&per_page=100"
        ))
    }

    /// A project by id or path (`grp/app`).
    pub fn project(&self, id_or_path: &str) -> String {
        self.url(&format!("/projects/{}", url_encode(id_or_path)))
    }

    /// A group's projects, subgroups included.
    pub fn group_projects(&self, group: &str) -> String {
        self.url(&format!(
            "/groups/{}/projects?include_subgroups=true&per_page=100&order_by=id&sort=asc",
            url_encode(group)
        ))
    }
}

/// A URL as errors and logs show it: without its query (cursors and paging, noise in a
/// message).
pub fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// An answer's JSON; `None` for a 404.
pub fn json_of<E>(res: &ApiResponse, url: &str) -> Result<Option<Value>, CrawlError<E>> {
    if res.status == 404 {
        return Ok(None);
    }
    serde_json::from_slice(&res.body)
        .map(Some)
        .map_err(|e| CrawlError::Malformed(format!("GitLab's answer to {} is not JSON: {e}", without_query(url))))
}

/// Every item of a paginated list (following `Link`, else `X-Next-Page`); `None` when the
/// list is gone (404).
pub async fn all_pages<E>(
    first: &str,
    get: &mut impl AsyncFnMut(&str) -> Result<ApiResponse, E>,
) -> Result<Option<Vec<Value>>, CrawlError<E>> {
    let mut items = Vec::new();
    let mut url = first.to_string();
    loop {
        let res = get(&url).await.map_err(CrawlError::Get)?;
        match json_of(&res, &url)? {
            None => return Ok(None),
            Some(Value::Array(page)) => items.extend(page),
            Some(_) => {
                return Err(CrawlError::Malformed(format!(
                    "GitLab's answer to {} is not a JSON array",
                    without_query(&url)
                )));
            }
        }
        match next_page(&res.headers, &url) {
            Some(next) => url = next,
            None => return Ok(Some(items)),
        }
    }
}

/// One pipeline as the API shows it, with all its jobs: `{"pipeline": …, "jobs": […]}`,
/// what `ingest::record_api` records. `None` when the pipeline is gone (404).
pub async fn pipeline_snapshot<E>(
    endpoints: &Endpoints,
    project: u64,
    id: u64,
    get: &mut impl AsyncFnMut(&str) -> Result<ApiResponse, E>,
) -> Result<Option<Value>, CrawlError<E>> {
    let url = endpoints.pipeline(project, id);
    let res = get(&url).await.map_err(CrawlError::Get)?;
    let Some(pipeline) = json_of(&res, &url)? else {
        return Ok(None);
    };
    let Some(jobs) = all_pages(&endpoints.pipeline_jobs(project, id), get).await? else {
        return Ok(None);
    };
    Ok(Some(json!({"pipeline": pipeline, "jobs": jobs})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::block_on;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> ApiResponse {
        ApiResponse {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_snapshot_follows_every_page_of_jobs() {
        let ep = Endpoints::new("https://g.example/");
        assert_eq!(
            ep.pipelines_updated_after(21, Some("2026-01-01T00:00:00Z"), 20),
            "https://g.example/api/v4/projects/21/pipelines?order_by=updated_at&sort=asc&per_page=20&updated_after=2026-01-01T00%3A00%3A00Z"
        );
        let mut asked = Vec::new();
        let mut get = async |url: &str| -> Result<ApiResponse, String> {
            asked.push(url.to_string());
            Ok(match asked.len() {
                1 => answer(200, &[], r#"{"id": 7, "status": "success"}"#),
                2 => answer(200, &[("x-next-page", "2")], r#"[{"id": 1}]"#),
                _ => answer(200, &[], r#"[{"id": 2}]"#),
            })
        };
        let snap = block_on(pipeline_snapshot(&ep, 21, 7, &mut get)).unwrap().unwrap();
        assert_eq!(snap["pipeline"]["id"], 7);
        assert_eq!(snap["jobs"], json!([{"id": 1}, {"id": 2}]));
        assert_eq!(asked.len(), 3);
        assert!(asked[2].contains("page=2"), "{asked:?}");

        let mut gone = async |_: &str| -> Result<ApiResponse, String> { Ok(answer(404, &[], "{}")) };
        assert!(block_on(pipeline_snapshot(&ep, 21, 8, &mut gone)).unwrap().is_none());
        let mut garbled = async |_: &str| -> Result<ApiResponse, String> { Ok(answer(200, &[], "<html>")) };
        assert!(matches!(
            block_on(pipeline_snapshot(&ep, 21, 9, &mut garbled)),
            Err(CrawlError::Malformed(m)) if m.contains("not JSON")
        ));
        let mut down = async |_: &str| -> Result<ApiResponse, String> { Err("refused".into()) };
        assert!(matches!(
            block_on(pipeline_snapshot(&ep, 21, 9, &mut down)),
            Err(CrawlError::Get(e)) if e == "refused"
        ));
    }
}
