// One job: header and status, the live log with its sections, search, permalinks,
// view options, cancel, raw view and download. Glue only: the model holds events and
// sections, the view draws them, the stream feeds them, the search asks the server.

import { ApiError, cancelJob, downloadLog, getJob, lineAt, rawLogUrl, search as searchApi } from "./api.js";
import { LogModel } from "./model.js";
import { LogView } from "./logview.js";
import { pref, setPref } from "./prefs.js";
import { LogSearch } from "./search.js";
import { Folds, renderSectionList } from "./sections.js";
import { LiveStream } from "./stream.js";
import { watchJob } from "./feed.js";
import { duration, el, FINAL, jobDuration } from "./util.js";

const POLL_MS = 3000;
const OUTAGE_MS = 2000; // reconnecting longer than this is an outage the page says
const $ = (id) => document.getElementById(id);
const CONN_TEXT = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", done: "", error: "" };
const STATUS_ICON = { queued: "◌", running: "●", completed: "✔", failed: "✖", cancelled: "⊘", unreachable: "?" };
const STATUS_COLOUR = { queued: "#6e7781", running: "#bf8700", completed: "#1a7f37", failed: "#cf222e", cancelled: "#6e7781", unreachable: "#6e7781" };
// Lines that mark a failure: the sections holding them open by themselves.
const FAILURE = String.raw`(?i)(^|[^a-z])(error|failed|failure|fatal|panic)([^a-z]|$)|##\[error\]|^::error`;
const TIME_MODES = ["off", "absolute", "relative"];

// "#L120" or "#L120-L140" (raw-log lines, from 1) -> {from, to}; anything else -> null.
export function parseHash(hash) {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash);
  if (!m) return null;
  const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
  if (!a || !b) return null;
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
  const folds = new Folds(model);
  const view = new LogView($("log"), model, folds);
  const search = new LogSearch(model);
  const stream = new LiveStream(model);
  const page = { job, outage: false };
  // Exposed for tests, the benchmark and curious users in the console.
  Object.assign(window, { streamerLog: model, streamerView: view, streamerSearch: search, streamerStream: stream, streamerFolds: folds });

  view.jobStart = Date.parse(job.started_at ?? job.created_at);
  header(page, model);
  wireSearch(search, view, folds);
  wireFollow(view, model);
  wireOptions(view);
  wireActions(page, () => { if (model.complete) finished(page, model.complete, model, folds); });

  const sectionList = $("section-list");
  const jumpTo = (s) => { folds.reveal(s.start_index, s.start_line); view.reveal(s.start_index, s.start_line); };
  let listed = 0; // one rebuild of the list per frame, however many sections change
  const refreshList = () => {
    if (!listed) listed = requestAnimationFrame(() => { listed = 0; renderSectionList(sectionList, model, folds, jumpTo); });
  };
  folds.onchange = () => { view.schedule(); refreshList(); };
  model.onsections = () => { folds.changed(); };
  model.onchange = () => view.schedule();
  let counted = 0;
  model.onappend = (ev) => {
    search.onAppend(ev);
    if (ev.type === "complete") finished(page, ev, model, folds);
    if (!counted) { counted = requestAnimationFrame(() => { counted = 0; header(page, model); }); }
  };
  stream.onevents = () => view.schedule();
  stream.onstate = (state, detail) => {
    const conn = $("conn");
    conn.className = `conn ${state}`;
    conn.textContent = state === "error" ? `stream stopped: ${detail}` : CONN_TEXT[state] ?? "";
    outage(page, model, state === "reconnecting");
  };
  stream.onjob = (fresh) => { page.job = fresh; page.outage = false; header(page, model); };

  const selection = parseHash(location.hash);
  try {
    await Promise.all([model.openTail(job.event_count), model.loadSections()]);
  } catch (err) {
    fail(`Could not load the log: ${err.message}`);
    return;
  }
  refreshList();
  header(page, model);
  if (model.complete) finished(page, model.complete, model, folds);
  if (selection) await goToLines(view, folds, model, selection);
  else view.follow();
  stream.setState("connecting");
  stream.start();

  view.onselect = ({ from, to }) => {
    history.replaceState(null, "", from === to ? `#L${from}` : `#L${from}-L${to}`);
  };
  addEventListener("hashchange", () => {
    const sel = parseHash(location.hash);
    if (sel) goToLines(view, folds, model, sel);
  });

  // The job's changes from the change feed: status and duration for the header, and a
  // safety net for events the stream could not show (see LiveStream.check); polled
  // only while the feed is down, when a failed poll means the server is unreachable.
  // The event count comes from the stream.
  const fresh = (changed) => {
    page.job = changed;
    page.outage = false;
    header(page, model);
    stream.check(page.job);
  };
  const poll = async () => {
    try {
      fresh(await getJob(id));
    } catch (err) {
      if (!(err instanceof ApiError)) outage(page, model, true);
    }
  };
  watchJob(id, fresh, poll, POLL_MS);
  const tick = setInterval(() => {
    header(page, model);
    view.schedule();
    if (model.complete && FINAL.has(page.job.status)) clearInterval(tick);
  }, 1000);
}

// #L120-L140: lines of the raw log. Loaded lines resolve here; others ask the server.
async function goToLines(view, folds, model, { from, to }) {
  view.select(from, to);
  let at = null;
  for (const c of model.chunks.values()) {
    for (let j = c.events.length - 1; j >= 0; j--) {
      if (c.lines[j] != null && c.lines[j] <= from && (j === c.events.length - 1 || c.lines[j + 1] > from || c.lines[j] === from)) {
        at = c.events[j].index;
        break;
      }
    }
    if (at !== null) break;
  }
  if (at === null) {
    try {
      at = (await lineAt(model.jobId, { line: from })).index;
    } catch { return; }
  }
  folds.reveal(at, from);
  view.reveal(at, from, to);
}

function header(page, model) {
  const { job } = page;
  const name = job.name || job.id;
  const status = page.outage ? "unreachable" : job.status;
  document.title = `${STATUS_ICON[status] ?? ""} ${name} · ${status} · streamer`;
  favicon(status);
  $("job-title").textContent = name;
  const badge = $("job-status");
  badge.className = `status s-${status}`;
  badge.textContent = page.outage ? "unreachable" : job.status;
  const ms = jobDuration(job);
  const parts = [job.id, `${model.count.toLocaleString("en-US")} events`];
  if (ms !== null) parts.push(duration(ms));
  if (job.redactions) parts.push(`${job.redactions.toLocaleString("en-US")} secrets masked`);
  $("job-meta").textContent = parts.join(" · ");
  $("cancel").hidden = FINAL.has(job.status) || !!model.complete;
  const crumbs = $("crumbs");
  if (!crumbs.firstChild) crumbs.append(el("a", { href: "./", textContent: "Jobs" }), " / ", el("span", { textContent: name }));
}

// The tab's icon in the status's colour (a data: URL, which the CSP allows).
let iconStatus = null;
function favicon(status) {
  if (status === iconStatus) return;
  iconStatus = status;
  const colour = STATUS_COLOUR[status] ?? "#1f6feb";
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="${colour}"/><path d="M4 5h8M4 8h6M4 11h8" stroke="#fff" stroke-width="1.6" stroke-linecap="round"/></svg>`;
  $("favicon").href = `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

// The server went away: say so, and stop claiming the job is "running".
let outageTimer = null;
function outage(page, model, down) {
  const box = $("outage");
  clearTimeout(outageTimer);
  if (!down) {
    page.outage = false;
    box.hidden = true;
    header(page, model);
    return;
  }
  outageTimer = setTimeout(() => {
    page.outage = true;
    box.hidden = false;
    box.textContent = "The server is unreachable. The log below is what arrived before; it resumes by itself when the server is back.";
    header(page, model);
  }, OUTAGE_MS);
}

// The complete event decides the banner; the job's status may say "cancelled".
function finished(page, ev, model, folds) {
  const { job } = page;
  const banner = $("banner");
  const cancelled = job.status === "cancelled";
  banner.hidden = false;
  banner.className = `banner ${ev.success ? "ok" : "bad"}`;
  const ms = jobDuration(job, Date.parse(ev.timestamp));
  const took = ms === null ? "" : ` in ${duration(ms)}`;
  banner.textContent = ev.success ? `✔ Succeeded${took}` : cancelled ? "✖ Cancelled" : `✖ Failed${took}`;
  if (!FINAL.has(job.status)) page.job = { ...job, status: ev.success ? "completed" : "failed", finished_at: ev.timestamp };
  header(page, model);
  $("jump").textContent = "Jump to end ↓";
  if (!ev.success) openFailures(model, folds, ev);
}

// A failed job: the sections it ended inside, and those holding an error line, open.
async function openFailures(model, folds, ev) {
  const places = (ev.section?.closed ?? []).map((s) => [s.end_index, s.end_line]);
  for (const s of model.sections.values()) if (s.end_index === ev.index) places.push([s.end_index, s.end_line]);
  try {
    const found = await searchApi(model.jobId, { q: FAILURE, regex: true, fromIndex: 0, limit: 200 });
    for (const m of found.matches) places.push([m.index, m.line]);
  } catch { /* the sections the job ended in are enough */ }
  folds.openAround(places);
}

function wireFollow(view, model) {
  const jump = $("jump");
  view.onfollow = (following) => { jump.hidden = following || model.count === 0; };
  jump.addEventListener("click", () => { view.follow(); $("log").focus(); });
  $("log").addEventListener("keydown", (e) => {
    if (e.target.closest?.(".fold")) return;
    if (e.key === "End") { e.preventDefault(); view.follow(); }
    if (e.key === "Home") { e.preventDefault(); view.setOffset(0); view.following = false; view.onfollow(false); view.render(); }
  });
}

function wireOptions(view) {
  const time = $("opt-time"), wrap = $("opt-wrap");
  const apply = () => {
    view.timestamps = pref("timestamps", "off");
    view.wrap = pref("wrap", "off") === "on";
    time.textContent = `Time: ${view.timestamps}`;
    time.setAttribute("aria-pressed", String(view.timestamps !== "off"));
    wrap.setAttribute("aria-pressed", String(view.wrap));
    view.relayout();
  };
  time.addEventListener("click", () => {
    setPref("timestamps", TIME_MODES[(TIME_MODES.indexOf(pref("timestamps", "off")) + 1) % TIME_MODES.length]);
    apply();
  });
  wrap.addEventListener("click", () => { setPref("wrap", view.wrap ? "off" : "on"); apply(); });
  apply();
}

function wireActions(page, oncancelled) {
  const cancel = $("cancel");
  let armed = false;
  cancel.addEventListener("click", async () => {
    if (!armed) { armed = true; cancel.textContent = "Confirm cancel"; setTimeout(() => { armed = false; cancel.textContent = "Cancel job"; }, 4000); return; }
    cancel.disabled = true;
    try {
      page.job = await cancelJob(page.job.id);
      oncancelled(); // the complete event may have come first: its banner says why now
    } catch (err) {
      fail(`Cancel failed: ${err.message}`);
    } finally {
      cancel.disabled = false;
      armed = false;
      cancel.textContent = "Cancel job";
    }
  });
  $("raw").addEventListener("click", async () => {
    // Opened now, in the click, so no pop-up blocker objects; pointed at the log once
    // a stream token is minted: no key ever goes into a URL.
    const tab = window.open("about:blank", "_blank");
    try {
      const url = await rawLogUrl(page.job.id);
      if (tab) tab.location.href = new URL(url, location.href).href;
    } catch (err) {
      tab?.close();
      fail(`Could not open the raw log: ${err.message}`);
    }
  });
  $("download").addEventListener("click", () => download(page.job));
}

function wireSearch(search, view, folds) {
  const input = $("search-q");
  const count = $("search-count");
  const caseButton = $("search-case"), regexButton = $("search-regex");
  let debounce = null;
  view.search = search;
  search.onupdate = () => {
    view.schedule();
    if (!search.query) count.textContent = "";
    else if (search.error) count.textContent = `search failed: ${search.error}`;
    else if (!search.total) count.textContent = search.done ? "no matches" : "searching…";
    else {
      const total = `${search.total.toLocaleString("en-US")}${search.counted ? "" : "+"}`;
      count.textContent = `${(search.current + 1).toLocaleString("en-US")} of ${total}`;
    }
  };
  search.onreveal = (m) => {
    folds.reveal(m.index, m.line);
    if (!view.visible(m.index, m.line)) view.reveal(m.index, m.line);
  };
  const run = () => search.set(input.value, {
    regex: regexButton.getAttribute("aria-pressed") === "true",
    caseSensitive: caseButton.getAttribute("aria-pressed") === "true",
  });
  for (const button of [caseButton, regexButton]) {
    button.addEventListener("click", () => {
      button.setAttribute("aria-pressed", String(button.getAttribute("aria-pressed") !== "true"));
      run();
    });
  }
  input.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(run, 150);
  });
  $("search-form").addEventListener("submit", (e) => e.preventDefault());
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (input.value !== search.query) { clearTimeout(debounce); run(); }
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
