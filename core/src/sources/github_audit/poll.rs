//! Polling GitHub's audit-log REST API from the scheduled component: `phrase=action:workflows`,
//! oldest first, 100 entries a page, following `Link: rel="next"` cursors, at most
//! `max_requests` pages a run. The page to fetch next is kept in the database, so each run
//! resumes where the last stopped; the last page is fetched again until it has a successor
//! (its new entries are recorded, its old ones are repeats). The HTTP client is the
//! caller's (`reconcile::Fetch`, which sends the token).

use serde_json::{Value, json};

use crate::ingest::{self, Settings};
use crate::reconcile::Fetch;
use crate::sources::gitlab_api::{next_page, retry_after};
use crate::sql::{DbError, Sql};
use crate::store;

/// Whose audit log: an organisation's or an enterprise's.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Org(String),
    Enterprise(String),
}

pub struct Config {
    /// `https://api.github.com` (GitHub Enterprise Cloud with data residency:
    /// `https://api.SUBDOMAIN.ghe.com`).
    pub api_url: String,
    pub scope: Scope,
    pub max_requests: usize,
    /// The instance a run not seen by webhooks is recorded under (`github.com`).
    pub instance: String,
}

impl Config {
    fn first_page(&self) -> String {
        let path = match &self.scope {
            Scope::Org(o) => format!("orgs/{}", crate::encoding::url_encode(o)),
            Scope::Enterprise(e) => format!("enterprises/{}", crate::encoding::url_encode(e)),
        };
        format!(
            "{}/{path}/audit-log?phrase=action%3Aworkflows&order=asc&per_page=100",
            self.api_url.trim_end_matches('/')
        )
    }

    fn cursor_setting(&self) -> String {
        format!("github_audit_next:{}", self.first_page())
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub requests: usize,
    pub entries: usize,
    pub recorded: usize,
    pub waiting_seconds: Option<u64>,
    pub error: Option<String>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "entries": self.entries,
            "recorded": self.recorded,
            "waiting_seconds": self.waiting_seconds,
            "error": self.error,
        })
    }
}

/// One bounded run. Storage failures are errors; GitHub's are reported and end the run.
pub async fn run<S: Sql, F: Fetch>(
    db: &S,
    fetch: &F,
    cfg: &Config,
    now: &str,
    settings: &Settings<'_>,
) -> Result<Report, DbError> {
    let first = cfg.first_page();
    let key = cfg.cursor_setting();
    let mut url = store::setting(db, &key)
        .await?
        .filter(|u| u.starts_with(cfg.api_url.trim_end_matches('/')))
        .unwrap_or(first);
    let mut report = Report::default();
    while report.requests < cfg.max_requests {
        report.requests += 1;
        let r = match fetch.get(&url).await {
            Ok(r) => r,
            Err(e) => {
                report.error = Some(format!("GET {url}: {e}"));
                break;
            }
        };
        if r.status == 429 || (r.status == 403 && r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("retry-after")))
        {
            report.waiting_seconds = Some(retry_after(&r.headers));
            break;
        }
        if r.status != 200 {
            report.error = Some(format!("GET {url}: HTTP {}", r.status));
            break;
        }
        let entries = match super::parse_page(&r.body) {
            Ok(e) => e,
            Err(e) => {
                report.error = Some(format!("GET {url}: {}", e.0));
                break;
            }
        };
        report.entries += entries.len();
        let outcomes = ingest::record_github_audit(db, &entries, now, settings, &cfg.instance).await?;
        report.recorded += outcomes
            .iter()
            .filter(|o| matches!(o, ingest::Outcome::Recorded { .. }))
            .count();
        match next_page(&r.headers, &url).filter(|n| n != &url) {
            Some(next) => {
                url = next;
                store::put_setting(db, &key, &url).await?;
            }
            None => break,
        }
    }
    Ok(report)
}
