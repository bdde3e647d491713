// One job: header and status, the live log, search, permalinks and download.
// Glue only: the model holds events, the view draws them, the stream feeds them.

import { ApiError, downloadLog, getJob } from "./api.js";
import { LogModel } from "./model.js";
import { LogView } from "./logview.js";
import { LogSearch } from "./search.js";
import { LiveStream } from "./stream.js";
import { watchJob } from "./feed.js";
import { duration, el, FINAL, jobDuration } from "./util.js";

const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);
const CONN_TEXT = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", done: "", error: "" };

// "#L120" or "#L120-L140" (event indexes) -> {from, to}; anything else -> null.
export function parseHash(hash) {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash);
  if (!m) return null;
  const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
  return { from: Math.min(a, b), to: Math.max(a, b) };
}

export async function showJob(id) {
  $("job-view").hidden = false;
  let job;
  try {
    job = await getJob(id);
  } catch (err) {
    fail(err instanceof ApiError && err.status === 404 ? "No such job (or not yours)." : err.message);
    return;
  }
  const model = new LogModel(id);
  const view = new LogView($("log"), model);
  const search = new LogSearch(model);
  const stream = new LiveStream(model);
  // Exposed for tests, the benchmark and curious users in the console.
  Object.assign(window, { streamerLog: model, streamerView: view, streamerSearch: search, streamerStream: stream });

  header(job);
  wireSearch(search, view);
  wireFollow(view, model);
  $("download").addEventListener("click", () => download(job));

  model.onchange = () => view.schedule();
  model.onappend = (ev) => {
    search.onAppend(ev);
    if (ev.type === "complete") finished(job, ev);
  };
  stream.onevents = () => view.schedule();
  stream.onstate = (state, detail) => {
    const conn = $("conn");
    conn.className = `conn ${state}`;
    conn.textContent = state === "error" ? `stream stopped: ${detail}` : CONN_TEXT[state] ?? "";
  };
  stream.onjob = (fresh) => header((job = fresh));

  const selection = parseHash(location.hash);
  try {
    await model.openTail(job.event_count);
  } catch (err) {
    fail(`Could not load the log: ${err.message}`);
    return;
  }
  if (model.complete) finished(job, model.complete);
  if (selection) {
    view.select(selection.from, selection.to);
    view.reveal(selection.from, selection.to);
  } else view.follow();
  stream.setState("connecting");
  stream.start();

  view.onselect = ({ from, to }) => {
    history.replaceState(null, "", from === to ? `#L${from}` : `#L${from}-L${to}`);
  };
  addEventListener("hashchange", () => {
    const sel = parseHash(location.hash);
    if (!sel) return;
    view.select(sel.from, sel.to);
    view.reveal(sel.from, sel.to);
  });

  // The job's changes from the change feed: status and duration for the header, and a
  // safety net for events the stream could not show (see LiveStream.check); polled
  // only while the feed is down. Tick durations every second.
  const fresh = (changed) => { job = changed; header(job); stream.check(job); };
  const poll = async () => {
    try { fresh(await getJob(id)); } catch { /* the stream shows the connection state */ }
  };
  watchJob(id, fresh, poll, POLL_MS);
  const tick = setInterval(() => {
    header(job);
    view.schedule();
    if (model.complete && FINAL.has(job.status)) clearInterval(tick);
  }, 1000);
}

function header(job) {
  const name = job.name || job.id;
  document.title = `${name} · streamer`;
  $("job-title").textContent = name;
  const badge = $("job-status");
  badge.className = `status s-${job.status}`;
  badge.textContent = job.status;
  const ms = jobDuration(job);
  const parts = [job.id, `${job.event_count.toLocaleString("en-US")} events`];
  if (ms !== null) parts.push(duration(ms));
  $("job-meta").textContent = parts.join(" · ");
  const crumbs = $("crumbs");
  if (!crumbs.firstChild) crumbs.append(el("a", { href: "./", textContent: "Jobs" }), " / ", el("span", { textContent: name }));
}

// The complete event decides the banner; the job's status may say "cancelled".
function finished(job, ev) {
  const banner = $("banner");
  const cancelled = job.status === "cancelled";
  banner.hidden = false;
  banner.className = `banner ${ev.success ? "ok" : "bad"}`;
  const ms = jobDuration(job, Date.parse(ev.timestamp));
  const took = ms === null ? "" : ` in ${duration(ms)}`;
  banner.textContent = ev.success ? `✔ Succeeded${took}` : cancelled ? "✖ Cancelled" : `✖ Failed${took}`;
  const badge = $("job-status");
  if (!FINAL.has(job.status)) {
    badge.className = `status s-${ev.success ? "completed" : "failed"}`;
    badge.textContent = ev.success ? "completed" : "failed";
  }
  $("jump").textContent = "Jump to end ↓";
}

function wireFollow(view, model) {
  const jump = $("jump");
  view.onfollow = (following) => { jump.hidden = following || model.count === 0; };
  jump.addEventListener("click", () => { view.follow(); $("log").focus(); });
  $("log").addEventListener("keydown", (e) => {
    if (e.key === "End") { e.preventDefault(); view.follow(); }
    if (e.key === "Home") { e.preventDefault(); view.reveal(0); }
  });
}

function wireSearch(search, view) {
  const input = $("search-q");
  const count = $("search-count");
  let debounce = null;
  view.search = search;
  search.onupdate = () => {
    view.schedule();
    if (!search.query) count.textContent = "";
    else if (search.error) count.textContent = `search failed: ${search.error}`;
    else {
      const scanning = search.done ? "" : ` (searching ${Math.floor(search.progress * 100)}%)`;
      if (!search.count) count.textContent = search.done ? "no matches" : `searching ${Math.floor(search.progress * 100)}%`;
      else count.textContent = `${search.current + 1} of ${search.count.toLocaleString("en-US")}${scanning}`;
    }
  };
  search.onreveal = (i) => { if (!view.visible(i)) view.reveal(i); };
  input.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => search.set(input.value), 150);
  });
  $("search-form").addEventListener("submit", (e) => e.preventDefault());
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (input.value !== search.query) { clearTimeout(debounce); search.set(input.value); }
      else search.step(e.shiftKey ? -1 : 1);
    } else if (e.key === "Escape") {
      input.value = "";
      search.set("");
      $("log").focus();
    }
  });
  $("search-next").addEventListener("click", () => search.step(1));
  $("search-prev").addEventListener("click", () => search.step(-1));
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
    if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey) { e.preventDefault(); input.focus(); input.select(); }
  });
}

async function download(job) {
  const button = $("download");
  button.disabled = true;
  try {
    const blob = await downloadLog(job.id);
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: `${(job.name || job.id).replace(/[^\w.-]+/g, "_")}.log` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    fail(`Download failed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

function fail(message) {
  const error = $("job-error");
  error.textContent = message;
  error.hidden = false;
}
