// The audit log's live mode: polls for events newer than the newest shown and adds them at
// the top. Builds cells with textContent only: event fields are never parsed as HTML.
"use strict";
(function () {
  const table = document.getElementById("events");
  if (!table || table.dataset.live !== "1") return;
  const body = table.tBodies[0];
  const state = document.getElementById("live-state");
  let after = table.dataset.after || "";
  const query = table.dataset.query || "";

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }
  function cell(tr, ...nodes) {
    const td = document.createElement("td");
    for (const n of nodes) td.append(n);
    tr.append(td);
    return td;
  }
  function row(ev) {
    const tr = document.createElement("tr");
    tr.className = "new";
    tr.dataset.seq = ev.seq;
    const forge = (ev.forge && ev.forge.kind) || "gitlab";
    cell(tr, (ev.occurred_at || "").slice(0, 19).replace("T", " ")).className = "t";
    const actor = ev.actor || {};
    cell(tr, actor.username ? link("/ui/actors/" + encodeURIComponent(actor.username), actor.username) : (actor.name || actor.kind || ""));
    cell(tr, ev.action + (ev.change ? " → " + ev.change.to : ""));
    const path = ev.project && ev.project.path;
    cell(tr, path ? link("/ui?project=" + encodeURIComponent(path), path) : "");
    const target = cell(tr);
    if (ev.pipeline) target.append(link("/ui/pipelines/" + forge + "/" + ev.pipeline.id, "pipeline " + ev.pipeline.id));
    if (ev.job) target.append(" · ", link("/ui/jobs/" + forge + "/" + ev.job.id, "job " + ev.job.id + (ev.job.name ? " " + ev.job.name : "")));
    cell(tr, (ev.pipeline && ev.pipeline.ref) || "");
    cell(tr, (ev.pipeline && ev.pipeline.trigger) || "");
    cell(tr, ((ev.evidence && ev.evidence.source) || "") + " " + (ev.attribution || ""));
    return tr;
  }
  async function poll() {
    try {
      let url = "/api/v1/events?limit=200" + (query ? "&" + query : "");
      if (after !== "") url += "&cursor=" + after;
      const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const page = await res.json();
      for (const ev of page.events) {
        const empty = body.querySelector("td[colspan]");
        if (empty) empty.parentElement.remove();
        body.prepend(row(ev));
        after = String(ev.seq);
      }
      if (state) state.textContent = "live: checked " + new Date().toLocaleTimeString();
      setTimeout(poll, page.next_cursor ? 0 : 2000);
    } catch (e) {
      if (state) state.textContent = "live: " + e.message + "; retrying";
      setTimeout(poll, 5000);
    }
  }
  setTimeout(poll, 2000);
})();
