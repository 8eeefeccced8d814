//! The API reconciler: webhooks are delivered at most once and never report a deletion, so
//! the scheduled component asks GitLab's REST API what happened, a bounded number of
//! requests per run, resuming from cursors kept in the database:
//! 1. per project, pipelines updated since the cursor (`updated_after`,
//!    `order_by=updated_at&sort=asc`), each with its jobs (`include_retried`, following
//!    `Link`), recorded through the same lifecycle diff as webhooks (evidence `gitlab.api`):
//!    only facts no webhook delivered become events;
//! 2. per project, the pipelines held here are probed in id order; one the API answers 404
//!    for on two runs in a row becomes `pipeline.deleted` with the window between the last
//!    time it was seen and the second 404, actor unknown unless another source names one (or
//!    it becomes evidence for the deletion a log line or the audit stream reported), and is
//!    not asked about again.
//!
//! It never hammers GitLab: a 429 stops the run and waits `Retry-After`; any other failure
//! stops it and backs off exponentially (30 s doubling to an hour). The HTTP client is the
//! caller's (`Fetch`): Spin's outbound HTTP in the component, ureq in the native tool.

use serde_json::{Value, json};

use crate::encoding::{hex, sha256};
use crate::ingest::{self, IngestError, Outcome, Settings};
use crate::model::{Action, Actor, ActorKind, Evidence, ForgeKind, Pipeline, Project, Source, Window};
use crate::sources::facts::Fact;
use crate::sources::gitlab_api::client::{self, CrawlError, Endpoints, without_query};
use crate::sources::gitlab_api::retry_after;
use crate::sql::{DbError, Sql, Val};
use crate::store;

pub use crate::sources::gitlab_api::client::ApiResponse;

/// A GET against the GitLab API, authenticated by the implementation (`PRIVATE-TOKEN`).
#[allow(async_fn_in_trait)]
pub trait Fetch {
    async fn get(&self, url: &str) -> Result<ApiResponse, String>;
}

pub struct Config {
    /// `https://gitlab.example.com` (no `/api/v4`).
    pub api_url: String,
    /// Numeric project ids.
    pub projects: Vec<u64>,
    /// Requests one run may make.
    pub max_requests: usize,
    /// Where the first run starts (`updated_after`); `None`: the beginning.
    pub since: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub requests: usize,
    pub pipelines_synced: usize,
    pub events: usize,
    pub probed: usize,
    pub deleted: Vec<u64>,
    pub waiting_until: Option<String>,
    pub error: Option<String>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "pipelines_synced": self.pipelines_synced,
            "events": self.events,
            "probed": self.probed,
            "deleted": self.deleted,
            "waiting_until": self.waiting_until,
            "error": self.error,
        })
    }
}

/// Why a run stopped early.
enum Stop {
    Budget,
    Wait,
    Db(DbError),
}

impl From<DbError> for Stop {
    fn from(e: DbError) -> Self {
        Stop::Db(e)
    }
}

const WAIT_KEY: &str = "reconcile:wait_until";
const FAILURES_KEY: &str = "reconcile:failures";
const PER_PAGE: usize = 20;

pub async fn run<S: Sql, F: Fetch>(
    db: &S,
    api: &F,
    cfg: &Config,
    now: &str,
    settings: &Settings<'_>,
) -> Result<Report, DbError> {
    let mut r = Runner {
        db,
        api,
        cfg,
        now,
        settings,
        report: Report::default(),
    };
    if let Some(until) = store::setting(db, WAIT_KEY).await?
        && until.as_str() > now
    {
        r.report.waiting_until = Some(until);
        return Ok(r.report);
    }
    let instance = crate::sources::gitlab_hooks::instance_of(Some(&cfg.api_url));
    let mut outcome = Ok(());
    for &project in &cfg.projects {
        outcome = r.sync(project).await;
        if outcome.is_ok() {
            outcome = r.probe(project, &instance).await;
        }
        if outcome.is_err() {
            break;
        }
    }
    match outcome {
        Ok(()) | Err(Stop::Budget) => {
            if r.report.error.is_none() {
                store::put_setting(db, FAILURES_KEY, "0").await?;
            }
        }
        Err(Stop::Wait) => {}
        Err(Stop::Db(e)) => return Err(e),
    }
    Ok(r.report)
}

struct Runner<'a, S, F> {
    db: &'a S,
    api: &'a F,
    cfg: &'a Config,
    now: &'a str,
    settings: &'a Settings<'a>,
    report: Report,
}

impl<S: Sql, F: Fetch> Runner<'_, S, F> {
    /// One GET within the budget. 429 and failures set the wait and stop the run; 404 is
    /// an answer (the caller decides what it means).
    async fn get(&mut self, url: &str) -> Result<ApiResponse, Stop> {
        if self.report.requests >= self.cfg.max_requests {
            return Err(Stop::Budget);
        }
        self.report.requests += 1;
        let failure = match self.api.get(url).await {
            Ok(res) if res.status == 429 => {
                let until = crate::time::plus_seconds(self.now, retry_after(&res.headers) as i64);
                store::put_setting(self.db, WAIT_KEY, &until).await?;
                self.report.waiting_until = Some(until);
                return Err(Stop::Wait);
            }
            Ok(res) if (200..300).contains(&res.status) || res.status == 404 => return Ok(res),
            Ok(res) => format!("GitLab answered {} to {}", res.status, without_query(url)),
            Err(e) => format!("GET {} failed: {e}", without_query(url)),
        };
        Err(self.fail(failure).await?)
    }

    /// A failure ends the run and backs off: 30 s, doubling with each failure in a row, at
    /// most an hour; the next runs wait until then.
    async fn fail(&mut self, failure: String) -> Result<Stop, DbError> {
        let failures: u32 = store::setting(self.db, FAILURES_KEY)
            .await?
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        let backoff = (30u64 << failures.min(7)).min(3600);
        let until = crate::time::plus_seconds(self.now, backoff as i64);
        store::put_setting(self.db, FAILURES_KEY, &(failures + 1).to_string()).await?;
        store::put_setting(self.db, WAIT_KEY, &until).await?;
        self.report.waiting_until = Some(until);
        self.report.error = Some(failure);
        Ok(Stop::Wait)
    }

    async fn get_json(&mut self, url: &str) -> Result<Option<Value>, Stop> {
        let res = self.get(url).await?;
        match client::json_of::<Stop>(&res, url) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.crawl_stopped(e).await?),
        }
    }

    /// What a crawl's error means for the run: the caller's stop as it was, or GitLab's
    /// malformed answer, a failure like any other (reported, backed off).
    async fn crawl_stopped(&mut self, e: CrawlError<Stop>) -> Result<Stop, DbError> {
        match e {
            CrawlError::Get(stop) => Ok(stop),
            CrawlError::Malformed(m) => self.fail(m).await,
        }
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints::new(&self.cfg.api_url)
    }

    /// Pipelines updated since the project's cursor, oldest first.
    async fn sync(&mut self, project: u64) -> Result<(), Stop> {
        let cursor_key = format!("reconcile:{project}:updated_after");
        loop {
            let cursor = store::setting(self.db, &cursor_key).await?.or(self.cfg.since.clone());
            let url = self
                .endpoints()
                .pipelines_updated_after(project, cursor.as_deref(), PER_PAGE);
            let Some(Value::Array(items)) = self.get_json(&url).await? else {
                return Ok(());
            };
            let mut advanced = false;
            for item in &items {
                let (Some(id), Some(updated)) = (item["id"].as_u64(), item["updated_at"].as_str()) else {
                    continue;
                };
                self.sync_pipeline(project, id).await?;
                if cursor.as_deref() != Some(updated) {
                    advanced = true;
                }
                store::put_setting(self.db, &cursor_key, updated).await?;
            }
            // A short page is the end; a full one whose pipelines all share the cursor's
            // time cannot move `updated_after` on, and the next run starts from it anyway.
            if items.len() < PER_PAGE || !advanced {
                return Ok(());
            }
        }
    }

    async fn sync_pipeline(&mut self, project: u64, id: u64) -> Result<(), Stop> {
        let endpoints = self.endpoints();
        let snapshot = {
            let mut get = async |url: &str| self.get(url).await;
            client::pipeline_snapshot(&endpoints, project, id, &mut get).await
        };
        let snapshot = match snapshot {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.crawl_stopped(e).await?),
        };
        match ingest::record_api_snapshot(self.db, &snapshot, self.now, self.settings).await {
            Ok(Outcome::Recorded { events, .. }) => self.report.events += events,
            Ok(Outcome::Duplicate) => {}
            Err(IngestError::Db(e)) => return Err(Stop::Db(e)),
            Err(IngestError::Invalid(m)) => {
                self.report.error = Some(format!("pipeline {id}: {m}"));
            }
        }
        self.report.pipelines_synced += 1;
        let instance = crate::sources::gitlab_hooks::instance_of(snapshot["pipeline"]["web_url"].as_str());
        self.seen(&instance, id).await?;
        Ok(())
    }

    async fn seen(&self, instance: &str, id: u64) -> Result<(), DbError> {
        self.db
            .exec(
                "INSERT INTO api_watch (instance, pipeline_id, last_seen_at, misses) VALUES (?, ?, ?, 0) ON CONFLICT(instance, pipeline_id) DO UPDATE SET last_seen_at = excluded.last_seen_at, misses = 0",
                &[Val::text(instance), Val::int(id), Val::text(self.now)],
            )
            .await
    }

    /// Probes the project's pipelines held here, in id order from the probe cursor.
    async fn probe(&mut self, project: u64, instance: &str) -> Result<(), Stop> {
        let cursor_key = format!("reconcile:{project}:probe_after");
        let after: u64 = store::setting(self.db, &cursor_key)
            .await?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let room = self.cfg.max_requests.saturating_sub(self.report.requests);
        if room == 0 {
            return Err(Stop::Budget);
        }
        let rows = self
            .db
            .query(
                // A pipeline the API has already reported gone (two misses) is not asked again.
                "SELECT p.pipeline_id, p.project_path FROM pipelines p LEFT JOIN api_watch w ON w.instance = p.instance AND w.pipeline_id = p.pipeline_id WHERE p.instance = ? AND p.project_id = ? AND p.pipeline_id > ? AND COALESCE(w.misses, 0) < 2 ORDER BY p.pipeline_id LIMIT ?",
                &[Val::text(instance), Val::int(project), Val::int(after), Val::int(room as u64)],
            )
            .await?;
        for row in &rows {
            let id = row.first().and_then(Val::as_i64).unwrap_or(0) as u64;
            let path = row.get(1).and_then(Val::as_str).map(str::to_string);
            let res = self.get(&self.endpoints().pipeline(project, id)).await?;
            self.report.probed += 1;
            if res.status == 404 {
                self.missing(instance, project, path, id, &res.body).await?;
            } else {
                self.seen(instance, id).await?;
            }
            store::put_setting(self.db, &cursor_key, &id.to_string()).await?;
        }
        if rows.len() < room {
            // Every held pipeline was probed: the next run starts over.
            store::put_setting(self.db, &cursor_key, "0").await?;
        }
        Ok(())
    }

    /// A 404 for a pipeline held here. The second in a row records the deletion.
    async fn missing(
        &mut self,
        instance: &str,
        project: u64,
        path: Option<String>,
        id: u64,
        body: &[u8],
    ) -> Result<(), Stop> {
        let db = self.db;
        let rows = db
            .query(
                "SELECT misses, last_seen_at FROM api_watch WHERE instance = ? AND pipeline_id = ?",
                &[Val::text(instance), Val::int(id)],
            )
            .await?;
        let misses = rows.first().and_then(|r| r.first()).and_then(Val::as_i64).unwrap_or(0) + 1;
        let mut last_seen = rows
            .first()
            .and_then(|r| r.get(1))
            .and_then(Val::as_str)
            .map(str::to_string);
        if last_seen.is_none() {
            let r = db
                .query(
                    "SELECT MAX(recorded_at) FROM events WHERE instance = ? AND pipeline_id = ?",
                    &[Val::text(instance), Val::int(id)],
                )
                .await?;
            last_seen = r
                .first()
                .and_then(|r| r.first())
                .and_then(Val::as_str)
                .map(str::to_string);
        }
        db.exec(
            "INSERT INTO api_watch (instance, pipeline_id, last_seen_at, misses) VALUES (?, ?, ?, ?) ON CONFLICT(instance, pipeline_id) DO UPDATE SET misses = excluded.misses",
            &[
                Val::text(instance),
                Val::int(id),
                Val::opt_text(last_seen.as_deref()),
                Val::Int(misses),
            ],
        )
        .await?;
        if misses < 2 {
            return Ok(());
        }
        let key = format!("pipeline|{id}|deleted");
        let mut event = Fact {
            forge: ForgeKind::Gitlab,
            instance,
            key: &key,
            action: Action::PipelineDeleted,
            occurred_at: self.now,
            recorded_at: self.now,
            project: Project { id: project, path },
            evidence: Evidence {
                source: Source::GitlabApi,
                delivery_id: None,
                payload_sha256: hex(&sha256(body)),
                remote_ip: None,
            },
        }
        .event();
        event.actor = Actor {
            kind: ActorKind::Unknown,
            note: Some(
                "GitLab's API shows only that the pipeline is gone; the audit stream or Rails logs name who deleted it"
                    .into(),
            ),
            ..Default::default()
        };
        event.pipeline = Some(Pipeline {
            id,
            ..Default::default()
        });
        event.window = Some(Window {
            not_before: last_seen.unwrap_or_default(),
            not_after: self.now.into(),
        });
        let appended = crate::sql::in_writer(db, async || {
            let stored = store::append(db, vec![event]).await?;
            let appended: Vec<&crate::model::Event> = stored.iter().map(|(e, _)| e).collect();
            crate::findings::raise(db, &appended, &self.settings.findings, self.now).await?;
            store::maybe_checkpoint(
                db,
                self.settings.signer,
                self.now,
                self.settings.checkpoint_interval_secs,
            )
            .await?;
            Ok(stored.len())
        })
        .await?;
        self.report.events += appended;
        self.report.deleted.push(id);
        Ok(())
    }
}
