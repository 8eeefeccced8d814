//! The sources: one folder each, holding how its deliveries are read (`parse`), what facts
//! they prove (`facts`, diffed against the projection) and their unit tests. Adding a source
//! is one folder here, one `ingest::Decoded` variant and one route row.
//!
//! - `gitlab_hooks`: GitLab Pipeline and Job Hooks;
//! - `gitlab_audit`: GitLab's audit-event stream;
//! - `gitlab_logs`: GitLab's Rails JSON logs, from a log shipper;
//! - `gitlab_api`: GitLab's REST API (pipelines and jobs), for facts no webhook delivered;
//! - `github`: GitHub Actions' `workflow_run` and `workflow_job` webhooks;
//! - `github_audit`: GitHub's audit log (who canceled, re-ran, deleted a run), polled or
//!   streamed to the HEC route.
//!
//! Shared by all: `json` (reading with named fields, `ParseError`) and `facts` (the
//! projection, event ids, status changes).

pub mod facts;
pub mod github;
pub mod github_audit;
pub mod gitlab_api;
pub mod gitlab_audit;
pub mod gitlab_hooks;
pub mod gitlab_logs;
pub mod json;

pub use json::ParseError;

/// Where the store says a pipeline lives: (instance, project id, project path).
pub type PipelineHome = (String, u64, Option<String>);
