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
