//! `pipetrail demo`: the generator's GitLab traffic, posted to a running app as GitLab
//! would send it, to fill the audit log and provenance pages (and to load-test a deployment).

use std::time::Instant;

use pipetrail_core::generate::{self, Kind, Mix};

pub struct Demo {
    pub url: String,
    pub webhook_secret: String,
    /// None: the deletions (audit-stream deliveries) are left out.
    pub audit_token: Option<String>,
    pub seed: u64,
    pub pipelines: u64,
    pub mix: Mix,
}

/// Ok(false): the app refused a delivery (said on stderr); sending stops there.
pub fn run(d: &Demo) -> anyhow::Result<bool> {
    let base = d.url.trim_end_matches('/');
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let (mut sent, mut skipped, mut events) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    // Slices of 100 pipelines: memory stays flat however many are asked for.
    let mut first = 0;
    while first < d.pipelines {
        let last = (first + 100).min(d.pipelines);
        for delivery in generate::traffic(d.seed, first..last, d.mix) {
            let mut req = agent
                .post(format!("{base}{}", delivery.kind.path()))
                .header("Content-Type", "application/json");
            req = match (delivery.kind, &d.audit_token) {
                (Kind::AuditEvent, None) => {
                    skipped += 1;
                    continue;
                }
                (Kind::AuditEvent, Some(token)) => req.header("X-Gitlab-Event-Streaming-Token", token),
                (kind, _) => req
                    .header("X-Gitlab-Token", &d.webhook_secret)
                    .header("X-Gitlab-Event", kind.event_header().unwrap_or_default())
                    .header("X-Gitlab-Event-UUID", &delivery.id),
            };
            let mut res = req
                .send(&delivery.body[..])
                .map_err(|e| anyhow::anyhow!("POST {base}{}: {e}", delivery.kind.path()))?;
            let text = res.body_mut().read_to_string().unwrap_or_default();
            if !res.status().is_success() {
                eprintln!(
                    "pipetrail: {base}{} answered {} to delivery {}: {}",
                    delivery.kind.path(),
                    res.status().as_u16(),
                    delivery.id,
                    text.trim()
                );
                return Ok(false);
            }
            events += serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["events"].as_u64())
                .unwrap_or(0);
            sent += 1;
        }
        first = last;
        eprint!("\r{last}/{} pipelines, {sent} deliveries, {events} events", d.pipelines);
    }
    eprintln!();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} deliveries of {} pipelines in {secs:.1} s ({:.0}/s); {events} events recorded",
        d.pipelines,
        sent as f64 / secs.max(1e-9)
    );
    if skipped > 0 {
        println!(
            "left out {skipped} pipeline deletions (audit-stream deliveries): give --audit-token-file or PIPETRAIL_AUDIT_STREAM_TOKEN to send them"
        );
    }
    Ok(true)
}
