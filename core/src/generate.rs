//! Deterministic GitLab traffic for benchmarks and demos: Pipeline Hook bodies shaped like
//! GitLab's published samples (same fields, both time formats GitLab uses in hooks), for
//! many projects, users and runners, each pipeline delivered as it progresses.

use serde_json::{Value, json};

/// xorshift64*: small, fast, and the same sequence on every machine for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const STAGES: [&str; 4] = ["build", "test", "deploy", "verify"];
const SOURCES: [&str; 6] = ["push", "merge_request_event", "web", "schedule", "api", "trigger"];
const RUNNER_TYPES: [&str; 3] = ["instance_type", "group_type", "project_type"];
const USERS: [&str; 8] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];

fn time(base: i64, offset: i64) -> String {
    // GitLab's webhook format: `2023-01-10 13:50:02 UTC`.
    let t = chrono::DateTime::from_timestamp(base + offset, 0).unwrap_or_default();
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The deliveries for `pipelines` pipelines, three snapshots each (pending, running,
/// finished), interleaved the way concurrent pipelines arrive. Each item: (delivery id, body).
pub fn pipeline_deliveries(seed: u64, pipelines: u64) -> Vec<(String, Vec<u8>)> {
    pipeline_deliveries_range(seed, 0..pipelines)
}

/// As `pipeline_deliveries`, for pipelines `range` of the same sequence: large data sets
/// are generated in slices without holding them whole.
pub fn pipeline_deliveries_range(seed: u64, range: std::ops::Range<u64>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity((range.end - range.start) as usize * 3);
    let base = 1_767_225_600; // 2026-01-01
    for p in range {
        // Each pipeline draws from its own stream, so any slice is reproducible alone.
        let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ p);
        let project = 100 + rng.below(50);
        let user = USERS[rng.below(USERS.len() as u64) as usize];
        let source = SOURCES[rng.below(SOURCES.len() as u64) as usize];
        let jobs = 5 + rng.below(10);
        let start = base + (p as i64) * 37;
        let pipeline_id = 1_000_000 + p;
        for (phase, status) in ["pending", "running", "success"].iter().enumerate() {
            let builds: Vec<Value> = (0..jobs)
                .map(|j| {
                    let (st, started, finished) = match phase {
                        0 => ("pending", Value::Null, Value::Null),
                        1 if j % 2 == 0 => ("running", json!(time(start, 10 + j as i64)), Value::Null),
                        1 => ("pending", Value::Null, Value::Null),
                        _ => ("success", json!(time(start, 10 + j as i64)), json!(time(start, 60 + j as i64))),
                    };
                    json!({
                        "id": pipeline_id * 100 + j,
                        "stage": STAGES[(j % 4) as usize],
                        "name": format!("job-{j}"),
                        "status": st,
                        "created_at": time(start, 0),
                        "started_at": started,
                        "finished_at": finished,
                        "duration": if phase == 2 { json!(50.0) } else { Value::Null },
                        "queued_duration": 2.5,
                        "when": "on_success",
                        "manual": false,
                        "allow_failure": false,
                        "user": {"id": 10 + user.len(), "name": user, "username": user, "email": format!("{user}@example.com")},
                        "runner": {"id": 500 + j % 3, "description": format!("runner-{}", j % 3), "runner_type": RUNNER_TYPES[(j % 3) as usize], "active": true, "is_shared": j % 3 == 0, "tags": ["docker"]},
                        "artifacts_file": {"filename": null, "size": null},
                        "environment": null
                    })
                })
                .collect();
            let body = json!({
                "object_kind": "pipeline",
                "object_attributes": {
                    "id": pipeline_id, "iid": p + 1, "ref": "main", "tag": false,
                    "sha": format!("{:040x}", rng.next_u64() as u128 * 7919),
                    "before_sha": "0000000000000000000000000000000000000000",
                    "source": source, "status": status, "detailed_status": status,
                    "stages": STAGES, "created_at": time(start, 0),
                    "finished_at": if phase == 2 { json!(time(start, 80)) } else { Value::Null },
                    "duration": if phase == 2 { json!(80) } else { Value::Null },
                    "queued_duration": 3,
                    "variables": [{"key": "DEPLOY_TARGET", "value": "secret-value"}]
                },
                "merge_request": null,
                "user": {"id": 10 + user.len(), "name": user, "username": user, "email": format!("{user}@example.com")},
                "project": {"id": project, "name": format!("app-{project}"), "web_url": format!("https://gitlab.example.com/group/app-{project}"),
                            "path_with_namespace": format!("group/app-{project}"), "default_branch": "main"},
                "commit": {"id": "x", "message": "change\n", "timestamp": "2026-01-01T00:00:00+00:00"},
                "builds": builds
            });
            out.push((
                format!("gen-{seed}-{p}-{phase}"),
                serde_json::to_vec(&body).expect("JSON serializes"),
            ));
        }
    }
    out
}

/// Where a generated delivery goes and what GitLab calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    PipelineHook,
    JobHook,
    /// GitLab's audit-event stream (a pipeline's deletion).
    AuditEvent,
}

impl Kind {
    /// The ingest route this delivery is posted to.
    pub fn path(self) -> &'static str {
        match self {
            Kind::PipelineHook | Kind::JobHook => "/hooks/gitlab",
            Kind::AuditEvent => "/hooks/gitlab/audit",
        }
    }

    /// `X-Gitlab-Event`, as GitLab sets it (the audit stream sends none).
    pub fn event_header(self) -> Option<&'static str> {
        match self {
            Kind::PipelineHook => Some("Pipeline Hook"),
            Kind::JobHook => Some("Job Hook"),
            Kind::AuditEvent => None,
        }
    }
}

/// One generated delivery. A repeated delivery carries the id of the first (GitLab resends
/// with the same `X-Gitlab-Event-UUID`).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub kind: Kind,
    pub body: Vec<u8>,
}

/// The shape of generated traffic.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub projects: u64,
    pub users: u64,
    /// Percent of deliveries sent twice.
    pub duplicate_percent: u64,
    /// Percent of deliveries that arrive after the one sent after them.
    pub reorder_percent: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            projects: 50,
            users: 40,
            duplicate_percent: 2,
            reorder_percent: 5,
        }
    }
}

const NAMES: [&str; 12] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar",
];
const JOB_NAMES: [&str; 10] = [
    "compile",
    "lint",
    "unit",
    "integration",
    "docker",
    "e2e",
    "package",
    "scan",
    "deploy",
    "smoke",
];

fn username(u: u64) -> String {
    let name = NAMES[(u % NAMES.len() as u64) as usize];
    match u / NAMES.len() as u64 {
        0 => name.to_string(),
        n => format!("{name}{n}"),
    }
}

fn user_json(u: u64) -> Value {
    let name = username(u);
    json!({"id": 1000 + u, "name": name, "username": name, "email": format!("{name}@example.com"),
           "avatar_url": format!("https://gitlab.example.com/uploads/-/system/user/avatar/{}/avatar.png", 1000 + u)})
}

/// One job of a generated pipeline: its statuses over time (seconds from the pipeline's
/// creation), and who made it run.
struct Job {
    id: u64,
    name: String,
    stage: &'static str,
    manual: bool,
    allow_failure: bool,
    retries_count: u64,
    user: u64,
    runner: Value,
    created: i64,
    /// (time, status), in order.
    steps: Vec<(i64, &'static str)>,
}

impl Job {
    fn status_at(&self, t: i64) -> Option<&'static str> {
        if t < self.created {
            return None;
        }
        let initial = if self.manual { "manual" } else { "created" };
        Some(
            self.steps
                .iter()
                .rev()
                .find(|(at, _)| *at <= t)
                .map_or(initial, |s| s.1),
        )
    }
    fn time_of(&self, status: &str, t: i64) -> Option<i64> {
        self.steps.iter().find(|(at, s)| *s == status && *at <= t).map(|s| s.0)
    }
}

/// A generated pipeline: its jobs, its status over time, and whether someone deletes it.
struct Run {
    p: u64,
    id: u64,
    project: u64,
    user: u64,
    source: &'static str,
    git_ref: String,
    sha: String,
    start: i64,
    jobs: Vec<Job>,
    steps: Vec<(i64, &'static str)>,
    deleted: Option<(i64, u64)>,
}

/// `pipelines` pipelines of GitLab traffic as it arrives, for `range` of the seed's
/// sequence: Pipeline Hooks at each pipeline status, Job Hooks at each job status, and an
/// audit event for each deletion. Pipelines have 5–50 jobs over four stages on shared,
/// group and project runners; some jobs fail and are retried by someone, some are manual
/// and played by someone, some pipelines are canceled or deleted. Deliveries of concurrent
/// pipelines interleave by time; `mix` adds repeats and out-of-order arrivals.
pub fn traffic(seed: u64, range: std::ops::Range<u64>, mix: Mix) -> Vec<Delivery> {
    let base = 1_767_225_600; // 2026-01-01
    let mut timed: Vec<(i64, Delivery)> = Vec::new();
    for p in range.clone() {
        let run = plan(seed, p, &mix);
        for (t, d) in run_deliveries(seed, &run, base) {
            timed.push((t, d));
        }
    }
    timed.sort_by_key(|(t, _)| *t);
    let mut out: Vec<Delivery> = timed.into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng::new(seed ^ range.start.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ 0xA5A5);
    let mut i = 0;
    while i + 1 < out.len() {
        if rng.below(100) < mix.reorder_percent {
            out.swap(i, i + 1);
            i += 1;
        }
        i += 1;
    }
    let mut with_repeats = Vec::with_capacity(out.len() + out.len() / 20);
    for d in out {
        let again = rng.below(100) < mix.duplicate_percent;
        if again {
            with_repeats.push(d.clone());
        }
        with_repeats.push(d);
    }
    with_repeats
}

fn plan(seed: u64, p: u64, mix: &Mix) -> Run {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ p ^ 0x7A11);
    let project = rng.below(mix.projects.max(1));
    let group = project / 10;
    let user = rng.below(mix.users.max(1));
    let source = SOURCES[rng.below(SOURCES.len() as u64) as usize];
    let n = 5 + rng.below(46);
    let fate = rng.below(100);
    // 3 % canceled, 8 % a job fails and is retried, 6 % a job fails for good.
    let canceled = fate < 3;
    let retry = (3..11).contains(&fate);
    let fails = (11..17).contains(&fate);
    let manual = rng.below(100) < 15;
    // Seeds have ids of their own: two demos with different seeds make different pipelines.
    let pipeline_id = 1_000_000 + (seed % 1000) * 100_000_000 + p;
    let mut jobs = Vec::new();
    let mut t = 5;
    let mut failed_for_good = false;
    let failing_job = rng.below(n);
    let mut cancel_at = None;
    for stage_no in 0..4u64 {
        let stage = STAGES[stage_no as usize];
        let in_stage: Vec<u64> = (0..n).filter(|j| j * 4 / n == stage_no).collect();
        let mut stage_end = t;
        if canceled && stage_no == 2 {
            cancel_at = Some(t + 3);
        }
        for &j in &in_stage {
            let runner = match rng.below(100) {
                0..60 => {
                    let r = rng.below(20);
                    json!({"id": 1 + r, "description": format!("{}-blue.shared.runners-manager.gitlab.example.com/default", r), "runner_type": "instance_type", "active": true, "is_shared": true, "tags": ["linux", "docker"]})
                }
                60..85 => {
                    let r = 10_000 + group * 3 + rng.below(3);
                    json!({"id": r, "description": format!("group-{group}-runner-{r}"), "runner_type": "group_type", "active": true, "is_shared": false, "tags": ["docker"]})
                }
                _ => {
                    let r = 100_000 + project * 2 + rng.below(2);
                    json!({"id": r, "description": format!("app-{project}-runner-{r}"), "runner_type": "project_type", "active": true, "is_shared": false, "tags": ["deploy"]})
                }
            };
            let is_manual = manual && stage_no == 3 && j == n - 1;
            let name = format!("{}-{}", JOB_NAMES[(j % JOB_NAMES.len() as u64) as usize], j);
            let mut job = Job {
                id: pipeline_id * 100 + j,
                name,
                stage,
                manual: is_manual,
                allow_failure: is_manual,
                retries_count: 0,
                user,
                runner,
                created: 0,
                steps: Vec::new(),
            };
            if let Some(c) = cancel_at {
                job.steps.push((c, "canceled"));
                jobs.push(job);
                continue;
            }
            if failed_for_good {
                job.steps.push((t, "skipped"));
                jobs.push(job);
                continue;
            }
            let mut at = t;
            if is_manual {
                if rng.below(100) < 70 {
                    // Played by someone, often not the one who pushed.
                    at += 30 + rng.below(600) as i64;
                    job.user = rng.below(mix.users.max(1));
                } else {
                    jobs.push(job);
                    continue;
                }
            }
            let queued = 1 + rng.below(8) as i64;
            let took = 10 + rng.below(120) as i64;
            job.steps.push((at, "pending"));
            job.steps.push((at + queued, "running"));
            let fails_here = (retry || fails) && j == failing_job;
            job.steps
                .push((at + queued + took, if fails_here { "failed" } else { "success" }));
            let mut end = at + queued + took;
            let retried_by = rng.below(mix.users.max(1));
            let job_name = job.name.clone();
            let (job_stage, job_runner) = (job.stage, job.runner.clone());
            jobs.push(job);
            if fails_here && retry {
                let r = end + 20 + rng.below(300) as i64;
                let took = 10 + rng.below(120) as i64;
                jobs.push(Job {
                    id: pipeline_id * 100 + 50 + j,
                    name: job_name,
                    stage: job_stage,
                    manual: false,
                    allow_failure: false,
                    retries_count: 1,
                    user: retried_by,
                    runner: job_runner,
                    created: r,
                    steps: vec![(r, "pending"), (r + 2, "running"), (r + 2 + took, "success")],
                });
                end = r + 2 + took;
            } else if fails_here {
                failed_for_good = true;
            }
            stage_end = stage_end.max(end);
        }
        if cancel_at.is_none() {
            t = stage_end + 2;
        }
    }
    let last = jobs.iter().flat_map(|j| j.steps.iter().map(|s| s.0)).max().unwrap_or(5);
    let first_run = jobs
        .iter()
        .filter_map(|j| j.steps.iter().find(|s| s.1 == "running").map(|s| s.0))
        .min();
    let mut steps = vec![(0, "pending")];
    if let Some(r) = first_run {
        steps.push((r, "running"));
    }
    let end = if canceled { cancel_at.unwrap_or(last) } else { last };
    let final_status = if canceled {
        "canceled"
    } else if failed_for_good {
        "failed"
    } else {
        "success"
    };
    steps.push((end.max(1), final_status));
    // 1 % are deleted by a maintainer a while after they finish.
    let deleted = (rng.below(100) == 0).then(|| (end + 600 + rng.below(3600) as i64, rng.below(mix.users.max(1))));
    let git_ref = if source == "merge_request_event" {
        format!("refs/merge-requests/{}/head", 1 + rng.below(400))
    } else {
        "main".to_string()
    };
    Run {
        p,
        id: pipeline_id,
        project,
        user,
        source,
        git_ref,
        sha: format!(
            "{:016x}{:016x}{:08x}",
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64() as u32
        ),
        start: (p as i64) * 37,
        jobs,
        steps,
        deleted,
    }
}

fn project_json(project: u64) -> Value {
    json!({"id": 100 + project, "name": format!("app-{project}"), "description": "",
           "web_url": format!("https://gitlab.example.com/group-{}/app-{project}", project / 10),
           "avatar_url": null,
           "git_ssh_url": format!("git@gitlab.example.com:group-{}/app-{project}.git", project / 10),
           "git_http_url": format!("https://gitlab.example.com/group-{}/app-{project}.git", project / 10),
           "namespace": format!("group-{}", project / 10), "visibility_level": 0,
           "path_with_namespace": format!("group-{}/app-{project}", project / 10), "default_branch": "main"})
}

fn run_deliveries(seed: u64, run: &Run, base: i64) -> Vec<(i64, Delivery)> {
    let at = |offset: i64| time(base + run.start, offset);
    let opt_at = |o: Option<i64>| o.map_or(Value::Null, |o| json!(at(o)));
    let mut out = Vec::new();
    let mut n = 0;
    let mut push = |t: i64, kind: Kind, body: Value| {
        out.push((
            base + run.start + t,
            Delivery {
                id: format!("gen-{seed}-{}-{n}", run.p),
                kind,
                body: serde_json::to_vec(&body).expect("JSON serializes"),
            },
        ));
        n += 1;
    };
    let commit = json!({"id": run.sha, "message": "Change the deploy step\n", "title": "Change the deploy step",
                        "timestamp": at(-120), "url": format!("https://gitlab.example.com/group-{}/app-{}/-/commit/{}", run.project / 10, run.project, run.sha),
                        "author": {"name": username(run.user), "email": format!("{}@example.com", username(run.user))}});
    for &(t, status) in &run.steps {
        let builds: Vec<Value> = run
            .jobs
            .iter()
            .filter_map(|j| {
                let st = j.status_at(t)?;
                Some(json!({
                    "id": j.id, "stage": j.stage, "name": j.name, "status": st,
                    "created_at": at(j.created), "started_at": opt_at(j.time_of("running", t)),
                    "finished_at": opt_at(j.steps.iter().find(|s| s.0 <= t && ["success", "failed", "canceled"].contains(&s.1)).map(|s| s.0)),
                    "duration": null, "queued_duration": null,
                    "when": if j.manual { "manual" } else { "on_success" }, "manual": j.manual,
                    "allow_failure": j.allow_failure, "user": user_json(j.user), "runner": j.runner,
                    "artifacts_file": {"filename": null, "size": null}, "environment": null
                }))
            })
            .collect();
        let finished = ["success", "failed", "canceled"].contains(&status);
        push(
            t,
            Kind::PipelineHook,
            json!({
                "object_kind": "pipeline",
                "object_attributes": {
                    "id": run.id, "iid": run.p + 1, "name": null, "ref": run.git_ref, "tag": false,
                    "sha": run.sha, "before_sha": "0000000000000000000000000000000000000000",
                    "source": run.source, "status": status, "detailed_status": status,
                    "stages": STAGES, "created_at": at(0),
                    "finished_at": if finished { json!(at(t)) } else { Value::Null },
                    "duration": if finished { json!(t) } else { Value::Null },
                    "queued_duration": 3, "url": format!("https://gitlab.example.com/group-{}/app-{}/-/pipelines/{}", run.project / 10, run.project, run.id),
                    "variables": [{"key": "DEPLOY_TARGET", "value": "secret-value"}]
                },
                "merge_request": null, "user": user_json(run.user), "project": project_json(run.project),
                "commit": commit, "source_pipeline": null, "builds": builds
            }),
        );
    }
    for j in &run.jobs {
        for &(t, status) in &j.steps {
            let started = j.time_of("running", t);
            let finished = ["success", "failed", "canceled"].contains(&status).then_some(t);
            let project = project_json(run.project);
            push(
                t,
                Kind::JobHook,
                json!({
                    "object_kind": "build", "ref": run.git_ref, "tag": false,
                    "before_sha": "0000000000000000000000000000000000000000", "sha": run.sha,
                    "build_id": j.id, "build_name": j.name, "build_stage": j.stage, "build_status": status,
                    "build_created_at": at(j.created), "build_started_at": opt_at(started),
                    "build_finished_at": opt_at(finished),
                    "build_duration": match (started, finished) { (Some(s), Some(f)) => json!((f - s) as f64), _ => Value::Null },
                    "build_queued_duration": 1.5, "build_allow_failure": j.allow_failure,
                    "build_failure_reason": if status == "failed" { "script_failure" } else { "unknown_failure" },
                    "retries_count": j.retries_count, "pipeline_id": run.id, "project_id": 100 + run.project,
                    "project_name": format!("group-{} / app-{}", run.project / 10, run.project),
                    "runner": if started.is_some() { j.runner.clone() } else { Value::Null },
                    "user": user_json(j.user),
                    "commit": {"id": run.id, "name": null, "sha": run.sha, "message": "Change the deploy step\n",
                               "author_name": username(run.user), "author_email": format!("{}@example.com", username(run.user)),
                               "author_url": format!("https://gitlab.example.com/{}", username(run.user)),
                               "status": "running", "duration": null, "started_at": null, "finished_at": null},
                    "repository": {"name": project["name"], "url": project["git_ssh_url"], "description": "",
                                   "homepage": project["web_url"], "git_http_url": project["git_http_url"],
                                   "git_ssh_url": project["git_ssh_url"], "visibility_level": 0},
                    "environment": null
                }),
            );
        }
    }
    if let Some((t, by)) = run.deleted {
        let path = format!("group-{}/app-{}", run.project / 10, run.project);
        push(
            t,
            Kind::AuditEvent,
            json!({
                "id": format!("{:08x}-{:04x}-4000-8000-{:012x}", run.id, seed & 0xffff, run.p),
                "author_id": 1000 + by, "author_name": username(by),
                "entity_id": 100 + run.project, "entity_type": "Project", "entity_path": path,
                "target_id": run.id, "target_type": "Ci::Pipeline", "target_details": run.id.to_string(),
                "event_type": "destroy_pipeline", "ip_address": "10.0.0.7",
                "created_at": chrono::DateTime::from_timestamp(base + run.start + t, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "details": {"author_name": username(by), "author_class": "User", "target_id": run.id,
                            "target_type": "Ci::Pipeline", "target_details": run.id.to_string(),
                            "custom_message": "Pipeline destroyed", "ip_address": "10.0.0.7", "entity_path": path}
            }),
        );
    }
    out
}
