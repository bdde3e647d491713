// The job list: the user's jobs, newest first, updated in place from the change feed
// (rows are updated by job id, so keyboard focus survives an update; polled every few
// seconds only while the feed is down), filtered by status and paged with the API's
// cursors.

import { listJobs } from "./api.js";
import { feed } from "./feed.js";
import { ago, duration, el, jobDuration } from "./util.js";

const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);

export function showList(params) {
  $("list-view").hidden = false;
  document.title = "Jobs · streamer";
  const filter = $("status-filter");
  const limit = Math.max(1, Math.min(200, Number(params.get("limit")) || 50));
  const cursors = [null]; // cursors[p] opens page p; a stack for "Newer"
  let page = 0, timer = null, seq = 0;
  const rows = new Map();
  filter.value = params.get("status") || "";

  async function refresh() {
    clearTimeout(timer);
    const mine = ++seq; // a slow answer for an older filter or page is dropped
    try {
      const data = await listJobs({ status: filter.value, limit, cursor: cursors[page] });
      if (mine !== seq) return;
      render(data);
      $("list-state").textContent = "";
    } catch (err) {
      if (mine !== seq) return;
      $("list-state").textContent = err.status ? `Error: ${err.message}` : "Offline, retrying…";
    }
    if (mine === seq && !feed.live) timer = setTimeout(refresh, document.hidden ? POLL_MS * 5 : POLL_MS);
  }

  // A change of a row shown is applied in place; one that adds, removes or moves rows
  // (a job created or deleted, one leaving the filter, missed changes) re-reads the page.
  let soon = null;
  feed.on((change) => {
    const tr = change.job && rows.get(change.job.id);
    const moves = change.type !== "updated" && change.type !== "grew"
      || (filter.value && change.job.status !== filter.value);
    if (!moves && tr) update(tr, change.job);
    else if (moves && (page === 0 || change.type !== "created")) {
      clearTimeout(soon);
      soon = setTimeout(refresh, 50);
    }
  });
  let wasLive = false;
  feed.onState((live) => {
    if (live !== wasLive) refresh(); // connected: no more polling; lost: poll until back
    wasLive = live;
  });

  function render({ jobs, next_cursor }) {
    cursors.length = page + 1;
    if (next_cursor) cursors.push(next_cursor);
    const body = $("jobs-body");
    let ref = body.firstElementChild;
    const ids = new Set();
    for (const job of jobs) {
      ids.add(job.id);
      let tr = rows.get(job.id);
      if (!tr) rows.set(job.id, (tr = row(job)));
      update(tr, job);
      if (tr !== ref) body.insertBefore(tr, ref);
      else ref = ref.nextElementSibling;
    }
    for (const [id, tr] of rows) if (!ids.has(id)) { tr.remove(); rows.delete(id); }
    $("jobs-empty").hidden = jobs.length > 0;
    $("page-newer").disabled = page === 0;
    $("page-older").disabled = !next_cursor;
    $("page-no").textContent = `page ${page + 1}`;
    document.querySelector(".pager").hidden = page === 0 && !next_cursor;
  }

  filter.addEventListener("change", () => {
    const q = new URLSearchParams(location.search);
    if (filter.value) q.set("status", filter.value); else q.delete("status");
    history.replaceState(null, "", `?${q}`.replace(/\?$/, location.pathname));
    page = 0;
    cursors.length = 1;
    refresh();
  });
  $("page-older").addEventListener("click", () => { if (cursors[page + 1]) { page++; refresh(); } });
  $("page-newer").addEventListener("click", () => { if (page > 0) { page--; refresh(); } });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  refresh();
}

function row(job) {
  const link = el("a", { href: `?job=${encodeURIComponent(job.id)}`, className: "job-name" });
  return el("tr", { dataset: { id: job.id } },
    el("td", {}, el("span", { className: "status" })),
    el("td", {}, link, el("div", { className: "job-id muted", textContent: job.id })),
    el("td", { className: "created muted" }),
    el("td", { className: "duration" }),
    el("td", { className: "num events" }));
}

// Only touch what changed: rewriting a focused link's text is harmless, replacing it is not.
function update(tr, job) {
  const set = (node, prop, value) => { if (node[prop] !== value) node[prop] = value; };
  const badge = tr.querySelector(".status");
  set(badge, "className", `status s-${job.status}`);
  set(badge, "textContent", job.status);
  set(tr.querySelector(".job-name"), "textContent", job.name || "(unnamed)");
  const created = tr.querySelector(".created");
  set(created, "textContent", ago(job.created_at));
  set(created, "title", new Date(job.created_at).toLocaleString());
  const ms = jobDuration(job);
  set(tr.querySelector(".duration"), "textContent", ms === null ? "—" : duration(ms));
  set(tr.querySelector(".events"), "textContent", job.event_count.toLocaleString("en-US"));
}
