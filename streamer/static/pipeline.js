// The pipeline view (/?pipeline=ID1,ID2,...): several jobs' logs side by side, each
// live, all over ONE connection, the multi-job stream (GET /api/v1/streams/events):
// browsers give a page six connections per host on HTTP/1.1, and a matrix of twelve
// shards would need twelve. Each job keeps its own next index, so a dropped
// connection resumes every job exactly (jobs=ID:N,...). Pane headers follow the
// change feed. Panes are resizable: drag a pane's corner, or focus its log and press
// Alt+← / Alt+→.

import { getJob } from "./api.js";
import { DEFAULT, advance, renderRuns, runs } from "./ansi.js";
import { feed } from "./feed.js";
import { messages, openStream, retryDelay } from "./sse.js";
import { duration, el, FINAL, jobDuration } from "./util.js";

export const MAX_JOBS = 12;
const MAX_ROWS = 5000; // per pane: older rows leave the DOM (the job page has them all)
const STEP_PX = 40;
const $ = (id) => document.getElementById(id);

class Pane {
  constructor(id, parent) {
    this.id = id;
    this.next = 0;
    this.state = DEFAULT;
    this.dropped = 0;
    this.title = el("a", { href: `?job=${encodeURIComponent(id)}`, className: "pane-title", textContent: id });
    this.status = el("span", { className: "status" });
    this.meta = el("span", { className: "muted pane-meta" });
    this.log = el("div", { className: "plog", tabIndex: 0, role: "log" });
    this.log.setAttribute("aria-label", `Log of job ${id}`);
    this.node = el("section", { className: "pane", dataset: { job: id } },
      el("header", { className: "pane-head" }, this.status, this.title, this.meta), this.log);
    this.log.addEventListener("keydown", (e) => this.key(e));
    parent.append(this.node);
  }

  header(job) {
    this.title.textContent = job.name || job.id;
    this.status.className = `status s-${job.status}`;
    this.status.textContent = job.status;
    const ms = jobDuration(job);
    this.meta.textContent = [`${job.event_count.toLocaleString("en-US")} events`, ms === null ? "" : duration(ms)]
      .filter(Boolean).join(" · ");
  }

  append(ev) {
    const log = this.log;
    const bottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const row = el("div", { className: `prow t-${ev.type}`, dataset: { index: String(ev.index) } });
    const txt = el("span", { className: "txt" });
    if (ev.type === "complete") {
      txt.textContent = ev.success ? "✔ Job succeeded" : "✖ Job failed";
      row.classList.add(ev.success ? "ok" : "bad");
    } else {
      renderRuns(txt, runs(ev.data, this.state).runs);
      this.state = advance(this.state, ev.data).state;
    }
    row.append(txt);
    log.append(row);
    this.next = ev.index + 1;
    while (log.childElementCount > MAX_ROWS) { log.firstElementChild.remove(); this.dropped += 1; }
    if (bottom) log.scrollTop = log.scrollHeight;
  }

  end(text) {
    this.log.append(el("div", { className: "prow pane-end muted", textContent: text }));
  }

  // Keyboard resizing: Alt+← narrower, Alt+→ wider.
  key(e) {
    if (!e.altKey || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
    e.preventDefault();
    const width = this.node.getBoundingClientRect().width + (e.key === "ArrowRight" ? STEP_PX : -STEP_PX);
    this.node.style.width = `${Math.max(160, width)}px`;
  }
}

// The jobs' events on one connection, each job's exactly once, in order.
export class MultiStream {
  constructor(panes, onstate) {
    this.panes = panes;
    this.open = new Set(panes.keys());
    this.onstate = onstate;
    this.connections = 0; // for the tests: how many times it had to connect
    this.attempt = 0;
  }

  async run() {
    while (this.open.size) {
      let reason = "";
      try {
        reason = await this.connect();
      } catch { reason = "offline"; }
      if (reason === "done" || !this.open.size) break;
      this.onstate(reason === "refused" ? "error" : "reconnecting");
      if (reason === "refused") return;
      await new Promise((resolve) => setTimeout(resolve, retryDelay(this.attempt++)));
    }
    this.onstate("done");
  }

  async connect() {
    const jobs = [...this.open].map((id) => `${id}:${this.panes.get(id).next}`).join(",");
    const response = await openStream(`/streams/events?jobs=${encodeURIComponent(jobs)}`);
    this.connections += 1;
    if (response.status === 204) {
      for (const id of this.open) this.panes.get(id).end("— end of log —");
      this.open.clear();
      return "done";
    }
    if (!response.ok) return [429, 503].includes(response.status) || response.status >= 500 ? "offline" : "refused";
    for await (const m of messages(response)) {
      if (m.comment !== undefined) { this.attempt = 0; this.onstate("live"); continue; }
      const body = JSON.parse(m.data);
      const pane = this.panes.get(body.job_id);
      if (!pane || !this.open.has(body.job_id)) continue;
      if (m.event === "_end" || m.event === "_error") {
        this.open.delete(body.job_id);
        pane.end(m.event === "_error" ? `stream refused: ${body.problem.detail}` : endText(body.reason));
      } else if (body.index === pane.next) pane.append(body);
      else if (body.index > pane.next) return "gap"; // reconnect from each job's position
    }
    return this.open.size ? "dropped" : "done";
  }
}

function endText(reason) {
  return reason === "complete" ? "— end of log —" : `— stream ended: ${reason} —`;
}

export async function showPipeline(ids) {
  const view = $("pipeline-view");
  view.hidden = false;
  document.title = "Pipeline · streamer";
  const wanted = [...new Set(ids)].slice(0, MAX_JOBS);
  const grid = $("panes");
  grid.style.setProperty("--pane-w", `calc((100% - ${wanted.length - 1} * 0.75rem) / ${wanted.length})`);
  const panes = new Map(wanted.map((id) => [id, new Pane(id, grid)]));
  const state = $("pipeline-state");
  const stream = new MultiStream(panes, (s) => {
    state.textContent = { live: "live", reconnecting: "reconnecting…", done: "", error: "stream refused" }[s] ?? "";
    state.className = `conn ${s}`;
  });
  window.streamerPipeline = { panes, stream }; // for tests and curious users
  const jobs = new Map();
  feed.on((change) => {
    const pane = change.job && panes.get(change.job.id);
    if (pane && change.type !== "deleted") { jobs.set(change.job.id, change.job); pane.header(change.job); }
  });
  await Promise.all(wanted.map(async (id) => {
    try {
      const job = await getJob(id);
      if (!jobs.has(id)) { jobs.set(id, job); panes.get(id).header(job); }
    } catch (err) { panes.get(id).meta.textContent = err.message; }
  }));
  setInterval(() => { // durations of running jobs tick
    for (const [id, job] of jobs) if (!FINAL.has(job.status)) panes.get(id).header(job);
  }, 1000);
  stream.run();
}

// The job list's "Watch running" button: the running jobs shown, in one pipeline view.
export function wireWatchButton() {
  $("watch-running").addEventListener("click", () => {
    const ids = [...document.querySelectorAll("#jobs-body tr")]
      .filter((tr) => tr.querySelector(".status")?.textContent === "running")
      .map((tr) => tr.dataset.id)
      .slice(0, MAX_JOBS);
    if (ids.length) location.assign(`?pipeline=${ids.map(encodeURIComponent).join(",")}`);
  });
}
