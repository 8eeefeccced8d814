//! The jobs of a pipeline as a timeline chart (inline SVG, no script): one bar per job
//! attempt from start to finish, coloured by status, the runner in the bar's tooltip, and
//! retried attempts drawn faded beside the attempt that replaced them.

use serde_json::Value;

use crate::html::esc;

const LABEL: f64 = 220.0;
const PLOT: f64 = 640.0;
const ROW: f64 = 22.0;

fn color(status: &str) -> &'static str {
    match status {
        "success" => "#2da44e",
        "failed" => "#cf222e",
        "canceled" | "canceling" => "#8c959f",
        "running" => "#0969da",
        "pending" | "preparing" | "waiting_for_resource" => "#bf8700",
        "manual" | "scheduled" => "#8250df",
        _ => "#6e7781",
    }
}

fn secs(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(pipetrail_core::time::parse)
        .map(|t| t.timestamp_millis())
}

/// `jobs`: the provenance summary's job objects.
pub fn svg(jobs: &[Value]) -> String {
    let mut rows: Vec<&Value> = jobs.iter().collect();
    rows.sort_by_key(|j| {
        (
            secs(&j["started_at"]).or(secs(&j["created_at"])).unwrap_or(i64::MAX),
            j["id"].as_u64(),
        )
    });
    let starts: Vec<i64> = rows.iter().filter_map(|j| secs(&j["started_at"])).collect();
    let ends: Vec<i64> = rows
        .iter()
        .filter_map(|j| secs(&j["finished_at"]).or(secs(&j["started_at"])))
        .collect();
    let (Some(&t0), Some(&t1)) = (starts.iter().min(), ends.iter().max()) else {
        return "<p class=\"muted\" id=\"timeline\">No job has started yet.</p>".into();
    };
    let span = (t1 - t0).max(1000) as f64;
    let x = |t: i64| LABEL + (t - t0) as f64 / span * PLOT;
    // Attempts of the same name: all but the newest were retried.
    let newest = |j: &Value| {
        !rows
            .iter()
            .any(|o| o["name"] == j["name"] && o["id"].as_u64() > j["id"].as_u64())
    };
    let height = ROW * rows.len() as f64 + 30.0;
    let mut out = format!(
        "<svg id=\"timeline\" role=\"img\" aria-label=\"Jobs on a timeline\" viewBox=\"0 0 {w} {height}\" width=\"100%\" style=\"max-width:{w}px\">",
        w = LABEL + PLOT + 20.0
    );
    for (i, j) in rows.iter().enumerate() {
        let y = ROW * i as f64;
        let status = j["status"].as_str().unwrap_or("");
        let retried = !newest(j);
        let name = format!(
            "{} #{}{}",
            j["name"].as_str().unwrap_or("job"),
            j["id"],
            if retried { " (retried)" } else { "" }
        );
        out.push_str(&format!("<text x=\"0\" y=\"{:.1}\">{}</text>", y + 15.0, esc(&name)));
        let Some(start) = secs(&j["started_at"]) else {
            out.push_str(&format!(
                "<text x=\"{LABEL}\" y=\"{:.1}\" class=\"muted\">{} (not started)</text>",
                y + 15.0,
                esc(status)
            ));
            continue;
        };
        let end = secs(&j["finished_at"]).unwrap_or(t1).max(start);
        let (x0, x1) = (x(start), x(end));
        let tip = format!(
            "{name}: {status}\nrunner: {} (#{}, {})\n{} → {}",
            j["runner"]["description"].as_str().unwrap_or("unknown"),
            j["runner"]["id"],
            j["runner"]["type"].as_str().unwrap_or("?"),
            j["started_at"].as_str().unwrap_or(""),
            j["finished_at"].as_str().unwrap_or("(not finished)")
        );
        out.push_str(&format!(
            "<rect class=\"bar\" data-job=\"{}\" data-status=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"{}\"{}><title>{}</title></rect>",
            j["id"],
            esc(status),
            y + 3.0,
            (x1 - x0).max(3.0),
            ROW - 6.0,
            color(status),
            if retried { " opacity=\"0.45\" stroke-dasharray=\"3 2\" stroke=\"currentColor\"" } else { "" },
            esc(&tip)
        ));
    }
    let axis_y = ROW * rows.len() as f64 + 4.0;
    out.push_str(&format!(
        "<line class=\"grid\" x1=\"{LABEL}\" x2=\"{:.1}\" y1=\"{axis_y:.1}\" y2=\"{axis_y:.1}\"/><text x=\"{LABEL}\" y=\"{:.1}\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} (+{:.0} s)</text></svg>",
        LABEL + PLOT,
        axis_y + 18.0,
        esc(&pipetrail_core::time::from_unix_millis(t0)[11..19]),
        LABEL + PLOT,
        axis_y + 18.0,
        esc(&pipetrail_core::time::from_unix_millis(t1)[11..19]),
        span / 1000.0
    ));
    out
}
