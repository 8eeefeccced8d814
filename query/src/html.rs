//! HTML building blocks for the server-rendered UI. Everything that comes from an event is
//! escaped here (`esc`); pages never build markup from unescaped input. Pages are sent with
//! a Content-Security-Policy that allows no inline script, so even a missed escape could
//! not run one.

use http::{HeaderValue, Response, StatusCode};

/// Escapes text for element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A URL path segment or query value, percent-encoded (then safe inside an attribute).
pub fn enc(text: &str) -> String {
    pipetrail_core::encoding::url_encode(text)
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f6f8fa; --link: #0969da; --bad: #cf222e; --badbg: #ffebe9; }
@media (prefers-color-scheme: dark) { :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --head: #151b23; --link: #4493f8; --bad: #f85149; --badbg: #3c1618; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; gap: 1.2em; align-items: baseline; padding: .6em 1.2em; border-bottom: 1px solid var(--line); background: var(--head); }
header .brand { font-weight: 700; }
header form { margin-left: auto; }
main { padding: 1em 1.2em; max-width: 1400px; }
a { color: var(--link); text-decoration: none; } a:hover { text-decoration: underline; }
h1 { font-size: 1.35em; margin: .2em 0 .6em; } h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .3em .5em; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--head); font-weight: 600; position: sticky; top: 0; }
td.t, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; white-space: nowrap; }
.muted { color: var(--muted); }
form.filters { display: flex; flex-wrap: wrap; gap: .4em .6em; align-items: end; margin-bottom: .8em; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
input, select, button { font: inherit; padding: .25em .4em; background: var(--bg); color: var(--fg); border: 1px solid var(--line); border-radius: 4px; }
button { cursor: pointer; background: var(--head); }
.banner { background: var(--badbg); color: var(--bad); border: 1px solid var(--bad); padding: .7em 1em; border-radius: 6px; font-weight: 600; margin-bottom: 1em; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .3em 1.2em; }
.facts dt { color: var(--muted); } .facts dd { margin: 0; }
.tools { display: flex; gap: 1em; margin: .5em 0; flex-wrap: wrap; }
svg text { fill: var(--fg); font: 12px system-ui, sans-serif; }
svg .grid { stroke: var(--line); }
tr.new { animation: flash 2s; } @keyframes flash { from { background: #fff8c5; } }
.sev { display: inline-block; padding: 0 .45em; border-radius: 4px; font-size: 12px; font-weight: 600; border: 1px solid var(--line); }
.sev-high { color: var(--bad); background: var(--badbg); border-color: var(--bad); }
.finding-banner { background: var(--head); color: var(--fg); border-color: var(--line); font-weight: 400; }
.finding-banner ul { margin: .3em 0 0; padding-left: 1.2em; }
pre { white-space: pre-wrap; word-break: break-all; background: var(--head); padding: .6em; border-radius: 6px; }
"#;

/// A whole page. `body` is already-escaped markup.
pub fn page(title: &str, logged_in: bool, body: &str, script: bool) -> String {
    let logout = if logged_in {
        r#"<form method="post" action="/ui/logout"><button type="submit">Log out</button></form>"#
    } else {
        ""
    };
    let script = if script {
        r#"<script src="/ui/assets/live.js" defer></script>"#
    } else {
        ""
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · pipetrail</title><style>{STYLE}</style>{script}</head><body><header><span class=\"brand\">pipetrail</span><a href=\"/ui\">Audit log</a><a href=\"/ui/findings\">Findings</a><a href=\"/ui/ledger\">Ledger</a>{logout}</header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

/// An HTML response with the headers every page carries.
pub fn respond(status: StatusCode, html: String) -> Response<String> {
    let mut r = Response::new(html);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

pub fn redirect(to: &str) -> Response<String> {
    let mut r = Response::new(String::new());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert("location", v);
    }
    r
}
