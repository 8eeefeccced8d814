//! The web UI: server-rendered pages over the same reads as the JSON API (each page links
//! its JSON twin). No build step, no framework: HTML, one stylesheet (light and dark), one
//! small script for the audit log's live mode. Login stores the API token in an HttpOnly,
//! SameSite=Strict cookie (Secure over TLS); every page sees only the token's projects.

use http::{HeaderValue, Response, StatusCode};
use pipetrail_core::model::{Action, Actor, Event, FindingRule, Pipeline, Severity, Source};
use pipetrail_core::params::{self, ParamError};
use pipetrail_core::sql::DbError;
use pipetrail_core::store::{self, EventFilter, StoredEvent};
use pipetrail_platform::{self as platform, Caller, Db, Request, SESSION_COOKIE};
use serde_json::Value;

use crate::api::{self, Reply};
use crate::html::{enc, esc, page, redirect, respond};

pub const LIVE_JS: &str = include_str!("live.js");

const PAGE_SIZE: usize = 100;

fn problem(status: StatusCode, logged_in: bool, title: &str, message: &str) -> Response<String> {
    respond(
        status,
        page(
            title,
            logged_in,
            &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(message)),
            false,
        ),
    )
}

fn bad_param(e: &ParamError) -> Response<String> {
    problem(
        StatusCode::BAD_REQUEST,
        true,
        "Bad filter",
        &format!("{}: {}", e.param, e.message),
    )
}

/// Where an unauthenticated page request goes.
pub fn to_login(path_and_query: &str) -> Response<String> {
    redirect(&format!("/ui/login?next={}", enc(path_and_query)))
}

fn safe_next(next: Option<&str>) -> String {
    // Only pages of this app: no open redirect.
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("//") && !n.contains(['\\', '\r', '\n']) => n.to_string(),
        _ => "/ui".to_string(),
    }
}

pub fn login_form(next: Option<&str>, message: Option<&str>) -> Response<String> {
    let note = message
        .map(|m| format!("<p class=\"banner\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Log in</h1>{note}<p class=\"muted\">Enter an API token once (from <span class=\"mono\">pipetrail token create</span>). It is kept in an HttpOnly cookie for this site only.</p>\
         <form method=\"post\" action=\"/ui/login\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>API token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label> <button type=\"submit\">Log in</button></form>",
        esc(&safe_next(next))
    );
    respond(
        if message.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        page("Log in", false, &body, false),
    )
}

/// `POST /ui/login`: checks the token like any API request, then sets the cookie.
pub async fn login(db: &Db, req: Request) -> Reply {
    let secure = platform::spin_header(req.headers(), "spin-full-url").is_some_and(|u| u.starts_with("https://"));
    let body = match platform::read_body(req, 16 * 1024).await {
        Ok(b) => b,
        Err(_) => return Ok(login_form(None, Some("The form could not be read."))),
    };
    let form = params::parse_query(&String::from_utf8_lossy(&body)).unwrap_or_default();
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.trim().to_string());
    let next = field("next");
    let Some(token) = field("token").filter(|t| !t.is_empty() && t.is_ascii() && !t.contains([';', ' ', ','])) else {
        return Ok(login_form(next.as_deref(), Some("That token is not valid.")));
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert("authorization", v);
    }
    if platform::authenticate(db, &headers).await.is_err() {
        return Ok(login_form(next.as_deref(), Some("That token is not valid.")));
    }
    let mut r = redirect(&safe_next(next.as_deref()));
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert("set-cookie", v);
    }
    Ok(r)
}

pub fn logout() -> Response<String> {
    let mut r = redirect("/ui/login");
    r.headers_mut().insert(
        "set-cookie",
        HeaderValue::from_static("pipetrail_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A time in a summary document, shown as `at` shows it.
fn when(v: &Value) -> String {
    at(&text(v))
}

/// An actor: a link to everything they did, else their name, else their kind and why the
/// source cannot say more. (Summaries carry actors as JSON: read back as the model's.)
fn actor_html(actor: &Actor) -> String {
    match (&actor.username, &actor.name) {
        (Some(u), _) => format!("<a href=\"/ui/actors/{}\">{}</a>", enc(u), esc(u)),
        (None, Some(n)) => esc(n),
        (None, None) => format!(
            "<span class=\"muted\" title=\"{}\">{}</span>",
            esc(actor.note.as_deref().unwrap_or("")),
            esc(actor.kind.as_str())
        ),
    }
}

/// An actor in a summary document (`provenance::summarize`).
fn summary_actor_html(actor: &Value) -> String {
    match serde_json::from_value::<Actor>(actor.clone()) {
        Ok(a) => actor_html(&a),
        Err(_) => String::new(),
    }
}

fn evidence_html(ev: &Event) -> String {
    let e = &ev.evidence;
    format!(
        "<span title=\"payload sha256 {} · delivery {}\">{}</span> <span class=\"muted\">{}</span>",
        esc(&e.payload_sha256),
        esc(e.delivery_id.as_deref().unwrap_or("")),
        esc(e.source.as_str()),
        esc(ev.attribution.as_str()),
    )
}

/// `2026-11-20T09:05:00.000Z` → `2026-11-20 09:05:00`.
fn at(t: &str) -> String {
    t.get(..19)
        .map(|s| s.replace('T', " "))
        .unwrap_or_else(|| t.to_string())
}

/// One audit-log row (the live script builds the same cells); a pruned event keeps its row.
fn row(stored: &StoredEvent) -> String {
    let Some(ev) = &stored.event else {
        return format!(
            "<tr data-seq=\"{}\"><td class=\"t\"></td><td></td><td class=\"muted\">(pruned)</td><td></td><td></td><td></td><td></td><td></td></tr>",
            stored.seq
        );
    };
    let forge = ev.forge.kind.as_str();
    let project = match (&ev.project.path, ev.project.id) {
        (Some(p), _) => format!("<a href=\"/ui?project={}\">{}</a>", enc(p), esc(p)),
        (None, id) if id > 0 => format!("<a href=\"/ui?project={id}\">{id}</a>"),
        _ => String::new(),
    };
    let mut target = String::new();
    if let Some(p) = &ev.pipeline {
        target.push_str(&format!("<a href=\"/ui/pipelines/{forge}/{0}\">pipeline {0}</a>", p.id));
    }
    if let Some(j) = &ev.job {
        let name = j.name.as_deref().map(|n| format!(" {}", esc(n))).unwrap_or_default();
        target.push_str(&format!(" · <a href=\"/ui/jobs/{forge}/{0}\">job {0}</a>{name}", j.id));
    }
    let change = match &ev.change {
        Some(c) => format!(" <span class=\"muted\">→ {}</span>", esc(&c.to)),
        None => String::new(),
    };
    let pipeline_text =
        |f: fn(&Pipeline) -> Option<&String>| ev.pipeline.as_ref().and_then(f).map(|t| esc(t)).unwrap_or_default();
    format!(
        "<tr data-seq=\"{}\"><td class=\"t\">{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        ev.seq,
        esc(&at(&ev.occurred_at)),
        actor_html(&ev.actor),
        esc(ev.action.as_str()),
        change,
        project,
        target,
        pipeline_text(|p| p.git_ref.as_ref()),
        pipeline_text(|p| p.trigger.as_ref()),
        evidence_html(ev),
    )
}

fn table(events: &[StoredEvent], live: Option<(&str, u64)>) -> String {
    let live_attrs = match live {
        Some((query, after)) => format!(
            " id=\"events\" data-live=\"1\" data-query=\"{}\" data-after=\"{after}\"",
            esc(query)
        ),
        None => " id=\"events\"".into(),
    };
    let rows: String = events.iter().map(row).collect();
    let empty = if events.is_empty() {
        "<tr><td colspan=\"8\" class=\"muted\">No events match.</td></tr>"
    } else {
        ""
    };
    format!(
        "<table{live_attrs}><thead><tr><th>Time (UTC)</th><th>Actor</th><th>Action</th><th>Project</th><th>Pipeline / job</th><th>Ref</th><th>Trigger</th><th>Evidence</th></tr></thead><tbody>{rows}{empty}</tbody></table>"
    )
}

/// The audit log: newest first, filters, keyset paging, exports, live mode.
pub async fn audit_log(db: &Db, caller: &Caller, pairs: &[(String, String)]) -> Reply {
    let live = pairs.iter().any(|(k, v)| k == "live" && v == "1");
    let filters: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, v)| k != "live" && !v.is_empty())
        .cloned()
        .collect();
    let (mut filter, _) = match params::event_filter(&filters) {
        Ok(f) => f,
        Err(e) => return Ok(bad_param(&e)),
    };
    // The page's cursor walks back in time.
    filter.before_seq = filter.after_seq.take();
    filter.descending = true;
    filter.scope = caller.scope();
    let found = store::list_events(db, &filter, PAGE_SIZE + 1).await?;
    let more = found.len() > PAGE_SIZE;
    let events = &found[..found.len().min(PAGE_SIZE)];
    let value = |k: &str| {
        filters
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let field = |k: &str, label: &str, kind: &str| {
        format!(
            "<label>{label}<input name=\"{k}\" type=\"{kind}\" value=\"{}\" size=\"14\"></label>",
            esc(value(k))
        )
    };
    let options = menu(value("action"), Action::ALL.iter().map(|a| a.as_str()));
    let sources = menu(value("source"), Source::ALL.iter().map(|s| s.as_str()));
    let query: String = filters
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "cursor" | "limit"))
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let amp = if query.is_empty() { "" } else { "&" };
    let newest = events.first().map_or(0, |e| e.seq);
    let older = if more {
        events
            .last()
            .map(|e| e.seq)
            .map(|s| format!("<a href=\"/ui?{query}{amp}cursor={s}\">Older →</a>"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let live_link = if live {
        format!(
            "<a href=\"/ui?{query}\">Stop live</a> <span class=\"muted\" id=\"live-state\">live: new events appear at the top</span>"
        )
    } else {
        format!("<a href=\"/ui?{query}{amp}live=1\">Live</a>")
    };
    let stream_only = if api::storage_mode().await == "stream-only" {
        "<div class=\"banner\" id=\"stream-only\">This install is streaming-only: events are sequenced and hashed here, and their bodies are kept only until every sink has them. Older events show as pruned; the sinks hold them.</div>"
    } else {
        ""
    };
    let body = format!(
        "{stream_only}<h1>Audit log</h1>\
         <form class=\"filters\" method=\"get\" action=\"/ui\">{}{}<label>Action<select name=\"action\">{options}</select></label>{}{}{}{}{}<label>Evidence<select name=\"source\">{sources}</select></label>{}{}<button type=\"submit\">Filter</button> <a href=\"/ui\">Clear</a></form>\
         <div class=\"tools\">{live_link}<a href=\"/api/v1/export?format=csv{amp}{query}\">Export CSV</a><a href=\"/api/v1/export?format=jsonl{amp}{query}\">Export JSONL</a><a href=\"/api/v1/events?{query}\">JSON</a>{older}</div>{}",
        field("actor", "Actor", "text"),
        field("project", "Project", "text"),
        field("pipeline", "Pipeline", "text"),
        field("job", "Job", "text"),
        field("ref", "Ref", "text"),
        field("trigger", "Trigger", "text"),
        field("forge", "Forge", "text"),
        field("since", "Since (UTC)", "text"),
        field("until", "Until (UTC)", "text"),
        table(events, live.then_some((query.as_str(), newest))),
    );
    Ok(respond(StatusCode::OK, page("Audit log", true, &body, live)))
}

/// Everything one user did, across the projects the token sees.
pub async fn actor(db: &Db, caller: &Caller, username: &str, pairs: &[(String, String)]) -> Reply {
    let mut filter = EventFilter {
        actor: Some(username.to_string()),
        descending: true,
        scope: caller.scope(),
        ..Default::default()
    };
    if let Some((_, c)) = pairs.iter().find(|(k, _)| k == "cursor") {
        match params::parse_u64("cursor", c) {
            Ok(c) => filter.before_seq = Some(c),
            Err(e) => return Ok(bad_param(&e)),
        }
    }
    let found = store::list_events(db, &filter, PAGE_SIZE + 1).await?;
    let more = found.len() > PAGE_SIZE;
    let events = &found[..found.len().min(PAGE_SIZE)];
    let u = enc(username);
    let about = pipetrail_core::findings::FindingFilter {
        events: EventFilter {
            actor: Some(username.to_string()),
            action: Some(Action::FindingRaised.as_str().into()),
            descending: true,
            scope: caller.scope(),
            ..Default::default()
        },
        ..Default::default()
    };
    let (raised, _) = pipetrail_core::findings::list(db, &about, 20).await?;
    let raised: Vec<(Severity, String, String)> = raised
        .iter()
        .filter_map(|s| s.event.as_ref()?.finding.as_ref())
        .map(|f| (f.severity, f.rule.to_string(), f.summary.clone()))
        .collect();
    let banner = findings_banner(&raised, "actor", &format!("actor={u}"));
    let older = match (more, events.last().map(|e| e.seq)) {
        (true, Some(s)) => format!("<a href=\"/ui/actors/{u}?cursor={s}\">Older →</a>"),
        _ => String::new(),
    };
    let body = format!(
        "{banner}<h1>Actor {}</h1><p class=\"muted\">Every event whose actor is this user, newest first. Cancels a source could not attribute are not listed here (their actor is unknown).</p>\
         <div class=\"tools\"><a href=\"/ui?actor={u}\">Filter the audit log</a><a href=\"/api/v1/export?format=csv&actor={u}\">Export CSV</a><a href=\"/api/v1/events?actor={u}\">JSON</a>{older}</div>{}",
        esc(username),
        table(events, None)
    );
    Ok(respond(
        StatusCode::OK,
        page(&format!("Actor {username}"), true, &body, false),
    ))
}

fn fact_rows(title: &str, facts: &Value) -> String {
    let Some(list) = facts.as_array().filter(|l| !l.is_empty()) else {
        return String::new();
    };
    list.iter()
        .map(|f| {
            let target = match (f["target"].as_str(), f["job_id"].as_u64()) {
                (_, Some(j)) => format!(
                    "job <a href=\"/ui/jobs/gitlab/{j}\">{j}</a> {}",
                    esc(&text(&f["job_name"]))
                ),
                (Some(t), None) => esc(t),
                _ => "pipeline".into(),
            };
            let target = if f["inherited_from"].is_string() {
                format!("{target} <span class=\"muted\">(with its pipeline: the pipeline's canceler)</span>")
            } else {
                target
            };
            let sources: String = f["evidence"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| {
                            format!(
                                "<li><span title=\"sha256 {}\">{}</span> · {} · {} {}</li>",
                                esc(&text(&e["payload_sha256"])),
                                esc(&text(&e["source"])),
                                esc(&when(&e["at"])),
                                summary_actor_html(&e["actor"]),
                                e["delivery_id"]
                                    .as_str()
                                    .map(|d| format!("<span class=\"muted mono\">{}</span>", esc(d)))
                                    .unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "<tr><td>{}</td><td>{target}</td><td>{}</td><td>{}</td><td class=\"t\">{}</td><td><ul>{sources}</ul></td></tr>",
                esc(title),
                summary_actor_html(&f["actor"]),
                esc(&text(&f["attribution"])),
                esc(&when(&f["at"])),
            )
        })
        .collect()
}

/// A vocabulary's menu: "any", then every word, `selected` selected.
fn menu(selected: &str, words: impl Iterator<Item = &'static str>) -> String {
    std::iter::once("")
        .chain(words)
        .map(|w| {
            format!(
                "<option value=\"{w}\"{}>{}</option>",
                if selected == w { " selected" } else { "" },
                if w.is_empty() { "any" } else { w }
            )
        })
        .collect()
}

/// A severity as a small badge.
fn severity_html(s: Severity) -> String {
    format!("<span class=\"sev sev-{0}\">{0}</span>", s.as_str())
}

/// The banner a pipeline or actor page shows above everything when findings name it: one
/// line per finding, each linking to the findings page.
fn findings_banner(findings: &[(Severity, String, String)], what: &str, link_query: &str) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let items: String = findings
        .iter()
        .map(|(sev, rule, summary)| {
            format!(
                "<li>{} <b>{}</b>: {}</li>",
                severity_html(*sev),
                esc(rule),
                esc(summary)
            )
        })
        .collect();
    format!(
        "<div class=\"banner finding-banner\" id=\"findings-banner\">{} finding{} on this {what} (<a href=\"/ui/findings?{}\">see them</a>)<ul>{items}</ul></div>",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        esc(link_query),
    )
}

/// Findings: what the rules raised, newest first, filtered by rule, severity, actor and
/// project; each links to its pipeline (whose page shows the evidence) and its events.
pub async fn findings(db: &Db, caller: &Caller, pairs: &[(String, String)]) -> Reply {
    let filters: Vec<(String, String)> = pairs.iter().filter(|(_, v)| !v.is_empty()).cloned().collect();
    let (mut filter, _) = match pipetrail_core::findings::list::parse(&filters) {
        Ok(f) => f,
        Err(e) => return Ok(bad_param(&e)),
    };
    filter.events.scope = caller.scope();
    let (found, next) = pipetrail_core::findings::list(db, &filter, PAGE_SIZE).await?;
    let value = |k: &str| filters.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v.as_str());

    let field = |k: &str, label: &str| {
        format!(
            "<label>{label}<input name=\"{k}\" type=\"text\" value=\"{}\" size=\"14\"></label>",
            esc(value(k))
        )
    };
    let rows: String = found
        .iter()
        .filter_map(|stored| stored.event.as_ref().map(|ev| (stored.seq, ev)))
        .filter_map(|(seq, ev)| ev.finding.as_ref().map(|f| (seq, ev, f)))
        .map(|(seq, ev, f)| {
            let forge = ev.forge.kind.as_str();
            let pipeline = ev.pipeline.as_ref().map_or(0, |p| p.id);
            let project = ev.project.path.clone().unwrap_or_else(|| ev.project.id.to_string());
            format!(
                "<tr data-seq=\"{seq}\" data-rule=\"{}\"><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/ui?project={}\">{}</a></td><td><a href=\"/ui/pipelines/{forge}/{pipeline}\">{pipeline}</a></td><td>{}</td><td><a href=\"/ui?forge={forge}&pipeline={pipeline}\" title=\"{}\">{} event{}</a></td></tr>",
                f.rule,
                esc(&at(&ev.occurred_at)),
                severity_html(f.severity),
                esc(f.rule.as_str()),
                actor_html(&ev.actor),
                enc(&project),
                esc(&project),
                esc(&f.summary),
                esc(&f.matched.join(" ")),
                f.matched.len(),
                if f.matched.len() == 1 { "" } else { "s" },
            )
        })
        .collect();
    let empty = if found.is_empty() {
        "<tr><td colspan=\"8\" class=\"muted\">No findings match.</td></tr>"
    } else {
        ""
    };
    let query: String = filters
        .iter()
        .filter(|(k, _)| k != "cursor")
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let amp = if query.is_empty() { "" } else { "&" };
    let older = next
        .map(|s| format!("<a href=\"/ui/findings?{query}{amp}cursor={s}\">Older →</a>"))
        .unwrap_or_default();
    let body = format!(
        "<h1>Findings</h1><p class=\"muted\">What the rules found in the recorded facts: each finding is itself a ledger entry (<code>finding.raised</code>), reached by every sink and export.</p>\
         <form class=\"filters\" method=\"get\" action=\"/ui/findings\"><label>Rule<select name=\"rule\">{}</select></label><label>Severity<select name=\"severity\">{}</select></label>{}{}<button type=\"submit\">Filter</button> <a href=\"/ui/findings\">Clear</a></form>\
         <div class=\"tools\"><a href=\"/api/v1/findings?{query}\">JSON</a><a href=\"/api/v1/export?format=csv&action=finding.raised\">Export CSV</a>{older}</div>\
         <table id=\"findings\"><thead><tr><th>Time (UTC)</th><th>Severity</th><th>Rule</th><th>Actor</th><th>Project</th><th>Pipeline</th><th>What</th><th>Evidence</th></tr></thead><tbody>{rows}{empty}</tbody></table>",
        menu(value("rule"), FindingRule::ALL.iter().map(|r| r.as_str())),
        menu(value("severity"), Severity::ALL.iter().map(|s| s.as_str())),
        field("actor", "Actor"),
        field("project", "Project"),
    );
    Ok(respond(StatusCode::OK, page("Findings", true, &body, false)))
}

/// The pipeline provenance page.
pub async fn pipeline(db: &Db, caller: &Caller, forge: &str, id: &str) -> Reply {
    let summary = match api::pipeline_summary(db, caller, forge, id).await? {
        Ok(s) => s,
        Err(_) => {
            return Ok(problem(
                StatusCode::NOT_FOUND,
                true,
                "Not found",
                &format!("No {forge} pipeline {id} is recorded (or your token does not cover its project)."),
            ));
        }
    };
    let p = &summary["pipeline"];
    let t = &summary["triggered_by"];
    let noun = if forge == "github" { "Workflow run" } else { "Pipeline" };
    let banner = if summary["deleted"].is_object() {
        let d = &summary["deleted"];
        format!(
            "<div class=\"banner\" id=\"deleted-banner\">This {} no longer exists in {}; this is the retained record. Deleted by {} ({}) at {}.</div>",
            noun.to_lowercase(),
            forge_name(forge),
            summary_actor_html(&d["actor"]),
            esc(&text(&d["attribution"])),
            esc(&when(&d["at"]))
        )
    } else {
        String::new()
    };
    let raised: Vec<(Severity, String, String)> = summary["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                Severity::parse(f["severity"].as_str()?)?,
                text(&f["rule"]),
                text(&f["summary"]),
            ))
        })
        .collect();
    let banner = findings_banner(&raised, "pipeline", &format!("forge={forge}&pipeline={}", enc(id))) + &banner;
    let project = text(&summary["project"]["path"]);
    let facts = format!(
        "<dl class=\"facts\"><dt>Project</dt><dd><a href=\"/ui?project={}\">{}</a></dd><dt>Triggered by</dt><dd id=\"triggered-by\">{} <span class=\"muted\">({})</span></dd><dt>How</dt><dd>{} <span class=\"muted\">source {}</span></dd><dt>When</dt><dd>{}</dd><dt>Ref / commit</dt><dd class=\"mono\">{} {}</dd><dt>Status</dt><dd id=\"status\">{}</dd>{}<dt>Variables (keys)</dt><dd class=\"mono\">{}</dd></dl>",
        enc(&project),
        esc(&project),
        summary_actor_html(&t["actor"]),
        esc(&text(&t["attribution"])),
        esc(&text(&t["trigger"])),
        esc(&text(&t["source"])),
        esc(&when(&t["at"])),
        esc(&text(&p["ref"])),
        esc(&text(&p["sha"])),
        esc(&text(&summary["status"])),
        workflow_facts(p),
        summary["variables"]
            .as_array()
            .map(|vs| vs.iter().map(|v| esc(&text(&v["key"]))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
    );
    let mut who = String::new();
    who.push_str(&fact_rows("triggered", &Value::Array(vec![t.clone()])));
    who.push_str(&fact_rows("retried", &summary["retries"]));
    who.push_str(&fact_rows("played", &summary["plays"]));
    who.push_str(&fact_rows("canceled", &summary["cancels"]));
    who.push_str(&fact_rows("erased", &summary["erasures"]));
    if summary["deleted"].is_object() {
        who.push_str(&fact_rows("deleted", &Value::Array(vec![summary["deleted"].clone()])));
    }
    let history: String = summary["status_history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|s| {
                    format!(
                        "<tr><td class=\"t\">{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&when(&s["at"])),
                        esc(&text(&s["from"])),
                        esc(&text(&s["to"]))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let jobs = summary["jobs"].as_array().cloned().unwrap_or_default();
    let job_rows: String = jobs
        .iter()
        .map(|j| {
            let id = j["id"].as_u64().unwrap_or(0);
            format!(
                "<tr><td><a href=\"/ui/jobs/{forge}/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td></tr>",
                esc(&text(&j["name"])),
                esc(&text(&j["stage"])),
                esc(&text(&j["status"])),
                runner_html(j),
                esc(&when(&j["started_at"])),
                esc(&when(&j["finished_at"])),
                [("retried by", &j["retried_by"]), ("played by", &j["played_by"])]
                    .iter()
                    .filter(|(_, a)| a.is_object())
                    .map(|(w, a)| format!("{w} {}", summary_actor_html(a)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
        .collect();
    let body = format!(
        "{banner}<h1>{noun} {} <span class=\"muted\">{}</span></h1>\
         <div class=\"tools\"><a href=\"/api/v1/pipelines/{forge}/{}\">JSON</a><a href=\"/ui?forge={forge}&pipeline={}\">Events</a><a href=\"/api/v1/export?format=csv&forge={forge}&pipeline={}\">Export CSV</a></div>{facts}\
         <h2>Who did what</h2><table id=\"who\"><thead><tr><th>What</th><th>Target</th><th>Who</th><th>Attribution</th><th>When (UTC)</th><th>Evidence</th></tr></thead><tbody>{who}</tbody></table>\
         <h2>Jobs</h2>{}\
         <table><thead><tr><th>Job</th><th>Name</th><th>Stage</th><th>Status</th><th>Runner</th><th>Started</th><th>Finished</th><th>Who</th></tr></thead><tbody>{job_rows}</tbody></table>\
         <h2>Status history</h2><table><thead><tr><th>When (UTC)</th><th>From</th><th>To</th></tr></thead><tbody>{history}</tbody></table>",
        esc(&text(&p["id"])),
        esc(&text(&p["name"])),
        p["id"],
        p["id"],
        p["id"],
        crate::timeline::svg(&jobs),
    );
    Ok(respond(
        StatusCode::OK,
        page(&format!("{noun} {}", text(&p["id"])), true, &body, false),
    ))
}

fn forge_name(forge: &str) -> &'static str {
    if forge == "github" { "GitHub" } else { "GitLab" }
}

/// What a GitHub run adds to the facts: its workflow file, number, attempt, conclusion.
fn workflow_facts(p: &Value) -> String {
    let mut out = String::new();
    if p["workflow_path"].is_string() {
        out.push_str(&format!(
            "<dt>Workflow</dt><dd class=\"mono\" id=\"workflow\">{}</dd>",
            esc(&text(&p["workflow_path"]))
        ));
    }
    if p["run_number"].is_u64() || p["run_attempt"].is_u64() {
        out.push_str(&format!(
            "<dt>Run</dt><dd id=\"run\">#{} <span class=\"muted\">attempt {}</span></dd>",
            esc(&text(&p["run_number"])),
            esc(&text(&p["run_attempt"]))
        ));
    }
    if p["conclusion"].is_string() {
        out.push_str(&format!(
            "<dt>Conclusion</dt><dd id=\"conclusion\">{}</dd>",
            esc(&text(&p["conclusion"]))
        ));
    }
    out
}

/// A job's runner: its name, its group (GitHub) and the labels the job asked for.
fn runner_html(j: &Value) -> String {
    let mut out = esc(&text(&j["runner"]["description"]));
    if let Some(g) = j["runner"]["group_name"].as_str() {
        out.push_str(&format!(" <span class=\"muted\">in {}</span>", esc(g)));
    }
    if let Some(labels) = j["labels"].as_array().filter(|l| !l.is_empty()) {
        let labels: Vec<String> = labels.iter().map(|l| esc(&text(l))).collect();
        out.push_str(&format!(" <span class=\"mono muted\">[{}]</span>", labels.join(", ")));
    }
    out
}

/// A GitHub job's steps and how each ended.
fn steps_html(j: &Value) -> String {
    let Some(steps) = j["steps"].as_array().filter(|s| !s.is_empty()) else {
        return String::new();
    };
    let rows: String = steps
        .iter()
        .map(|s| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td></tr>",
                esc(&text(&s["number"])),
                esc(&text(&s["name"])),
                esc(&text(&s["status"])),
                esc(&text(&s["conclusion"])),
                esc(&when(&s["started_at"])),
                esc(&when(&s["completed_at"])),
            )
        })
        .collect();
    format!(
        "<h2>Steps</h2><table id=\"steps\"><thead><tr><th>#</th><th>Step</th><th>Status</th><th>Conclusion</th><th>Started</th><th>Completed</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

/// The job page: its events and what the last of them says about it.
pub async fn job(db: &Db, caller: &Caller, forge: &str, id: &str) -> Reply {
    let Ok(id) = params::parse_u64("id", id) else {
        return Ok(problem(StatusCode::NOT_FOUND, true, "Not found", "No such job."));
    };
    if !matches!(forge, "gitlab" | "github") {
        return Ok(problem(StatusCode::NOT_FOUND, true, "Not found", "No such forge."));
    }
    let mut events = api::all_events(db, caller, forge, id, "job").await?;
    let Some((last, j)) = events
        .iter()
        .rev()
        .find_map(|e| e.event.as_ref().and_then(|ev| Some((ev, ev.job.as_ref()?))))
    else {
        return Ok(problem(
            StatusCode::NOT_FOUND,
            true,
            "Not found",
            &format!("No {forge} job {id} is recorded (or your token does not cover its project)."),
        ));
    };
    let pipeline = last.pipeline.as_ref().map(|p| p.id);
    let project = last.project.path.clone().unwrap_or_default();
    let job = serde_json::to_value(j).unwrap_or_default();
    let body = format!(
        "<h1>Job {id} <span class=\"muted\">{}</span></h1><div class=\"tools\"><a href=\"/api/v1/events?forge={forge}&job={id}\">JSON</a>{}</div>\
         <dl class=\"facts\"><dt>Stage</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd><dt>Runner</dt><dd>{} <span class=\"muted\">#{} {}</span></dd><dt>Started</dt><dd>{}</dd><dt>Finished</dt><dd>{}</dd><dt>Project</dt><dd>{}</dd></dl>{}<h2>Events</h2>{}",
        esc(j.name.as_deref().unwrap_or("")),
        pipeline
            .map(|p| format!("<a href=\"/ui/pipelines/{forge}/{p}\">Pipeline {p}</a>"))
            .unwrap_or_default(),
        esc(j.stage.as_deref().unwrap_or("")),
        esc(j.status.as_deref().unwrap_or("")),
        runner_html(&job),
        j.runner.as_ref().map(|r| r.id.to_string()).unwrap_or_default(),
        esc(j.runner.as_ref().and_then(|r| r.kind.as_deref()).unwrap_or("")),
        esc(&at(j.started_at.as_deref().unwrap_or(""))),
        esc(&at(j.finished_at.as_deref().unwrap_or(""))),
        esc(&project),
        steps_html(&job),
        {
            events.reverse();
            table(&events, None)
        },
    );
    Ok(respond(StatusCode::OK, page(&format!("Job {id}"), true, &body, false)))
}

/// The ledger page.
pub async fn ledger(db: &Db) -> Result<Response<String>, DbError> {
    let l = api::ledger_state(db).await?;
    let cp = &l["latest_checkpoint"];
    let verification = match l["last_verification"].as_object() {
        Some(v) => format!(
            "{} at {}",
            esc(&text(&v["result"])),
            esc(&when(&v["at"]))
        ),
        None => "never in place (an admin runs <span class=\"mono\">POST /admin/verify</span>; anyone with a copy runs <span class=\"mono\">pipetrail verify</span>)".into(),
    };
    let key_note = if l["signing_key_configured"] == Value::Bool(true) {
        ""
    } else {
        "<div class=\"banner\">The signing key was generated and lives in the database: try-out only. Set the signing_key variable.</div>"
    };
    let body = format!(
        "<h1>Ledger</h1>{key_note}<div class=\"tools\"><a href=\"/api/v1/ledger\">JSON</a><a href=\"/api/v1/checkpoint\">Checkpoint</a><a href=\"/api/v1/key\">Verifier key</a></div>\
         <dl class=\"facts\"><dt>Entries</dt><dd id=\"ledger-size\">{}</dd><dt>Latest checkpoint</dt><dd>size {} signed {}</dd><dt>Root</dt><dd class=\"mono\">{}</dd><dt>Verifier key</dt><dd class=\"mono\">{}</dd><dt>Last verified</dt><dd id=\"last-verified\">{verification}</dd></dl>\
         <h2>Signed checkpoint</h2><pre>{}</pre>",
        l["size"],
        esc(&text(&cp["size"])),
        esc(&when(&cp["signed_at"])),
        esc(&text(&cp["root"])),
        esc(&text(&l["verifier_key"])),
        esc(&text(&cp["note"])),
    );
    Ok(respond(StatusCode::OK, page("Ledger", true, &body, false)))
}

pub fn asset(name: &str) -> Response<String> {
    match name {
        "live.js" => {
            let mut r = Response::new(LIVE_JS.to_string());
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("max-age=300"));
            r
        }
        _ => problem(StatusCode::NOT_FOUND, false, "Not found", "No such asset."),
    }
}

#[cfg(test)]
mod tests {
    use super::row;
    use pipetrail_core::store::StoredEvent;
    use serde_json::json;

    /// A stored event's forge is one of the model's (anything else is refused when the
    /// event is read), so a row's links are built from known words; every text is escaped.
    #[test]
    fn row_links_are_built_from_the_typed_event() {
        let ev = json!({
            "v": 1, "seq": 3, "id": "ev_1", "action": "job.canceled", "occurred_at": "2026-01-01T00:00:00.000Z",
            "recorded_at": "2026-01-01T00:00:00.000Z", "actor": {"kind": "user", "username": "<b>"},
            "attribution": "rails_log", "forge": {"kind": "github", "instance": "i"},
            "project": {"id": 1, "path": "g/\"x"}, "pipeline": {"id": 7}, "job": {"id": 8, "name": "<img src=x>"},
            "evidence": {"source": "gitlab.rails_log", "payload_sha256": "ab"},
        });
        let stored = StoredEvent {
            seq: 3,
            event: Some(serde_json::from_value(ev).unwrap()),
            leaf_hash: [0; 32],
        };
        let html = row(&stored);
        assert!(
            html.contains("/ui/pipelines/github/7") && html.contains("/ui/jobs/github/8"),
            "{html}"
        );
        assert!(
            !html.contains("<img") && !html.contains("<b>") && !html.contains("g/\"x"),
            "{html}"
        );
        let forged = json!({"v": 1, "seq": 3, "id": "e", "action": "job.canceled", "occurred_at": "t", "recorded_at": "t",
            "actor": {"kind": "user"}, "attribution": "none", "forge": {"kind": "x\"><img src=x>", "instance": "i"},
            "project": {"id": 1}, "evidence": {"source": "gitlab.webhook", "payload_sha256": "ab"}});
        assert!(serde_json::from_value::<pipetrail_core::model::Event>(forged).is_err());
    }
}
