//! A pipeline as GitLab holds it, rendered both as webhooks and as API answers, plus
//! GitLab-shaped Rails log lines: what the attribution and UI tests drive the app with.

use pipetrail_testhost::fake_gitlab::FakeGitlab;
use serde_json::{Value, json};

use super::fixture;

pub const PROJECT: u64 = 21;
pub const PATH: &str = "grp/app";

pub fn user(id: u64, username: &str) -> Value {
    json!({"id": id, "username": username, "name": username.to_uppercase(), "state": "active"})
}

/// One pipeline as GitLab holds it, rendered as webhooks and as API answers alike.
pub struct World {
    pub host: String,
    pub project_id: u64,
    pub project_path: String,
    pub pipeline: Value,
    pub jobs: Vec<Value>,
}

impl World {
    /// `host` is where GitLab serves (its web URLs, hence the instance).
    pub fn new(host: &str, id: u64, triggerer: Value) -> World {
        let mut p = fixture("pipelines_api_get_single_docs.json");
        p["id"] = json!(id);
        p["iid"] = json!(id - 200);
        p["project_id"] = json!(PROJECT);
        p["status"] = json!("pending");
        p["user"] = triggerer;
        p["web_url"] = json!(format!("http://{host}/{PATH}/-/pipelines/{id}"));
        p["created_at"] = json!("2026-11-20T09:00:00.000Z");
        p["updated_at"] = json!("2026-11-20T09:00:00.000Z");
        p["finished_at"] = Value::Null;
        World {
            host: host.into(),
            project_id: PROJECT,
            project_path: PATH.into(),
            pipeline: p,
            jobs: Vec::new(),
        }
    }

    /// The same pipeline in another project.
    pub fn in_project(mut self, id: u64, path: &str) -> World {
        self.project_id = id;
        self.project_path = path.into();
        self.pipeline["project_id"] = json!(id);
        self.pipeline["web_url"] = json!(format!("http://{}/{path}/-/pipelines/{}", self.host, self.id()));
        self
    }

    pub fn id(&self) -> u64 {
        self.pipeline["id"].as_u64().unwrap()
    }

    pub fn add_job(&mut self, id: u64, name: &str, stage: &str, status: &str, by: &Value, at: &str) {
        self.jobs.push(json!({
            "id": id, "name": name, "stage": stage, "status": status, "ref": "main", "tag": false,
            "allow_failure": false, "created_at": at, "started_at": null, "finished_at": null,
            "duration": null, "queued_duration": null, "user": by, "pipeline": {"id": self.id()},
            "runner": {"id": 7, "description": "shared-1", "is_shared": true, "runner_type": "instance_type"},
            "tag_list": ["docker"], "when": if status == "manual" { "manual" } else { "on_success" },
        }));
    }

    pub fn job(&mut self, id: u64) -> &mut Value {
        self.jobs.iter_mut().find(|j| j["id"] == json!(id)).unwrap()
    }

    pub fn set_status(&mut self, status: &str, at: &str) {
        self.pipeline["status"] = json!(status);
        self.pipeline["updated_at"] = json!(at);
        if matches!(status, "success" | "failed" | "canceled") {
            self.pipeline["finished_at"] = json!(at);
        }
    }

    /// The Pipeline Hook GitLab would send now (the fixture's shape, this world's values).
    pub fn pipeline_hook(&self) -> Vec<u8> {
        let mut h = fixture("pipeline_hook_go-gitlab.json");
        let p = &self.pipeline;
        let a = &mut h["object_attributes"];
        for k in [
            "id",
            "iid",
            "ref",
            "sha",
            "before_sha",
            "source",
            "status",
            "created_at",
            "finished_at",
        ] {
            a[k] = p[k].clone();
        }
        a["variables"] = json!([{"key": "DEPLOY_TARGET", "value": "eu-1"}]);
        h["user"] = p["user"].clone();
        h["project"]["id"] = json!(self.project_id);
        h["project"]["path_with_namespace"] = json!(self.project_path);
        h["project"]["web_url"] = json!(format!("http://{}/{}", self.host, self.project_path));
        h["builds"] = Value::Array(
            self.jobs
                .iter()
                .map(|j| {
                    json!({"id": j["id"], "stage": j["stage"], "name": j["name"], "status": j["status"],
                        "created_at": j["created_at"], "started_at": j["started_at"], "finished_at": j["finished_at"],
                        "when": j["when"], "manual": j["when"] == "manual", "allow_failure": false,
                        "user": j["user"], "runner": j["runner"], "environment": j["environment"]})
                })
                .collect(),
        );
        h.to_string().into_bytes()
    }

    /// The Job Hook GitLab would send now for job `id`.
    pub fn job_hook(&self, id: u64, retries_count: u64) -> Vec<u8> {
        let j = self.jobs.iter().find(|j| j["id"] == json!(id)).unwrap();
        let mut h = fixture("job_hook_go-gitlab.json");
        h["build_id"] = json!(id);
        h["build_name"] = j["name"].clone();
        h["build_stage"] = j["stage"].clone();
        h["build_status"] = j["status"].clone();
        h["build_created_at"] = j["created_at"].clone();
        h["build_started_at"] = j["started_at"].clone();
        h["build_finished_at"] = j["finished_at"].clone();
        h["build_failure_reason"] = json!("unknown_failure");
        h["retries_count"] = json!(retries_count);
        h["pipeline_id"] = json!(self.id());
        h["project_id"] = json!(self.project_id);
        h["user"] = j["user"].clone();
        h["ref"] = json!("main");
        // The fixture's job deploys to production; this world's jobs deploy only when told.
        h["environment"] = j["environment"].clone();
        h["repository"]["homepage"] = json!(format!("http://{}/{}", self.host, self.project_path));
        h.to_string().into_bytes()
    }

    /// Publishes the current state to the fake GitLab's API.
    pub fn publish(&self, gitlab: &FakeGitlab) {
        let mut s = gitlab.state();
        s.projects.insert(self.project_id, (self.project_path.clone(), 5));
        s.pipelines.insert(self.id(), (self.project_id, self.pipeline.clone()));
        s.jobs.insert(self.id(), self.jobs.clone());
    }
}

pub fn log_line(fields: Value) -> String {
    fields.to_string()
}

pub fn api_log(method: &str, route: &str, path: &str, status: u16, who: (u64, &str), at: &str) -> String {
    log_line(json!({
        "time": at, "severity": "INFO", "duration_s": 0.05, "db_duration_s": 0.01, "view_duration_s": 0.04,
        "status": status, "method": method, "path": path, "params": [], "host": "gitlab.internal",
        "remote_ip": "10.1.2.3", "ua": "curl/8.5.0", "route": route, "user_id": who.0, "username": who.1,
        "queue_duration_s": 0.001, "correlation_id": format!("corr-{}-{}", who.1, status),
        "meta.user": who.1, "meta.caller_id": format!("{method} {route}"),
    }))
}

pub fn web_log(
    controller: &str,
    action: &str,
    method: &str,
    path: &str,
    status: u16,
    who: (u64, &str),
    at: &str,
) -> String {
    log_line(json!({
        "method": method, "path": path, "format": "html", "controller": controller, "action": action,
        "status": status, "time": at, "params": [{"key": "namespace_id", "value": "grp"}],
        "remote_ip": "10.9.8.7", "user_id": who.0, "username": who.1, "correlation_id": format!("corr-web-{}", who.1),
        "meta.caller_id": format!("{controller}#{action}"), "meta.user": who.1, "meta.project": PATH,
        "duration_s": 0.12, "db_duration_s": 0.02, "view_duration_s": 0.0,
    }))
}
