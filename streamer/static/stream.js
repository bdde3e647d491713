// Live events over SSE, resumed by index: the page never loses or repeats a line.
//
// EventSource reconnects by itself, but with the same URL (an expired stream token
// after five minutes) and hidden state. We close it on any error and reconnect
// ourselves: check the job, mint a fresh token, and ask for from_index = count,
// the next index the model needs. Every event goes through deliver(), which keeps
// the model at exactly 0..count-1: older indexes are dropped, a jump ahead is
// filled from the page API first.

import { ApiError, eventsPage, getJob, mintStreamToken, streamUrl } from "./api.js";
import { FINAL } from "./util.js";

// EventSource dispatches by event name, so custom types need a listener each. A type
// not listed here is not lost: the next listed one arrives ahead and fills the gap,
// and check() (driven by the job poll) fetches what the stream did not show.
const TYPES = [
  "message", "log", "complete", "step", "progress", "stdout", "stderr", "output",
  "command", "group", "endgroup", "section", "status", "info", "notice", "warning",
  "error", "debug", "result", "artifact", "metric", "annotation",
];
const PAGE = 1000;
// More events than this within BURST_MS: the stream is replaying a backlog. One SSE
// message per event costs the browser ~0.1 ms each, enough to starve rendering for
// seconds, so the page switches to pages of 1000 (one JSON parse each) until it has
// caught up, then streams again.
const BURST = 500;
const BURST_MS = 250;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class LiveStream {
  constructor(model) {
    this.model = model;
    this.state = "idle";
    this.es = null;
    this.attempt = 0;
    this.pending = [];
    this.filling = false;
    this.target = 0;
    this.lastEventAt = 0;
    this.windowStart = 0;
    this.windowCount = 0;
    this.catchUps = 0; // bursts read by page instead of SSE (the tests check the path)
    this.stopped = false;
    this.onstate = () => {};
    this.onevents = () => {};
    this.onjob = () => {};
  }

  setState(state, detail = "") {
    this.state = state;
    this.onstate(state, detail);
  }

  start() {
    if (this.model.complete) this.setState("done");
    else this.connect();
  }

  stop() {
    this.stopped = true;
    this.es?.close();
  }

  async connect() {
    const { model } = this;
    if (this.stopped || model.complete) return;
    try {
      const job = await getJob(model.jobId);
      this.onjob(job);
      if (job.event_count < model.count) {
        // The server has fewer events than we showed (restored from a backup?):
        // a stream from our index would be refused. Say so rather than loop.
        this.setState("error", `server has ${job.event_count} events, the page ${model.count}`);
        return;
      }
      if (FINAL.has(job.status)) {
        await this.fill(job.event_count); // a finished job: pages are enough
        if (model.complete) return this.finish();
      }
      const { token } = await mintStreamToken(model.jobId);
      if (this.stopped || model.complete) return;
      const es = new EventSource(streamUrl(model.jobId, token, model.count));
      this.es = es;
      es.onopen = () => { this.attempt = 0; this.setState("live"); };
      es.onerror = () => {
        es.close();
        if (this.es === es) { this.es = null; this.retry(); }
      };
      const receive = (e) => {
        if (this.es !== es) return;
        this.deliver(JSON.parse(e.data));
        if (this.es === es && this.burst()) this.catchUp(es);
      };
      for (const type of TYPES) es.addEventListener(type, receive);
    } catch (err) {
      if (err instanceof ApiError && [401, 403, 404].includes(err.status)) {
        this.setState("error", err.message);
        return;
      }
      this.retry();
    }
  }

  // Capped, jittered backoff: a restarted server is not stampeded by every tab.
  retry() {
    if (this.stopped || this.model.complete) return;
    this.setState("reconnecting");
    const delay = Math.min(5000, 250 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    setTimeout(() => this.connect(), delay);
  }

  burst() {
    const now = performance.now();
    if (now - this.windowStart > BURST_MS) { this.windowStart = now; this.windowCount = 0; }
    return ++this.windowCount > BURST;
  }

  async catchUp(es) {
    es.close();
    this.es = null;
    this.windowCount = 0;
    this.catchUps += 1;
    try {
      for (;;) {
        const job = await getJob(this.model.jobId);
        this.onjob(job);
        if (job.event_count - this.model.count < BURST) break;
        await this.fill(job.event_count);
        if (this.model.complete) return this.finish();
      }
    } catch {
      return this.retry(); // the server went away meanwhile
    }
    this.connect();
  }

  finish() {
    this.es?.close();
    this.es = null;
    this.setState("done");
  }

  deliver(ev) {
    if (this.filling) { this.pending.push(ev); return; }
    if (ev.index < this.model.count) return; // already held: a replay overlap
    if (ev.index > this.model.count) this.pending.push(ev);
    else this.apply(ev);
    // A gap to fill, or held events that are next now. If the server is away, the
    // stream's own error path reconnects, so a failed fill needs no handling here.
    if (this.pending.length) this.fill().catch(() => {});
  }

  apply(ev) {
    this.model.append(ev);
    this.lastEventAt = Date.now();
    this.onevents();
    if (ev.type === "complete") this.finish();
  }

  // Bring the model up to `target` (and past every pending event) from the page API,
  // applying pending stream events as soon as they are next in line.
  async fill(target = 0) {
    this.target = Math.max(this.target, target);
    if (this.filling) return;
    this.filling = true;
    const { model } = this;
    try {
      for (let failures = 0; !this.stopped && !model.complete; ) {
        this.pending.sort((a, b) => a.index - b.index);
        while (this.pending.length && this.pending[0].index <= model.count) {
          const ev = this.pending.shift();
          if (ev.index === model.count) this.apply(ev);
        }
        const want = Math.max(this.target, this.pending.length ? this.pending[0].index : 0);
        if (model.count >= want || model.complete) break;
        try {
          const page = await eventsPage(model.jobId, model.count, Math.min(PAGE, want - model.count));
          for (const ev of page.events) if (ev.index === model.count && !model.complete) this.apply(ev);
          if (!page.events.length) break;
          failures = 0;
        } catch (err) {
          if (++failures > 20) throw err;
          await pause(Math.min(5000, 200 * failures)); // the server may be restarting
        }
      }
    } finally {
      if (model.complete) this.pending = [];
      this.filling = false;
    }
  }

  // From the job poll: events the stream has not shown (a custom type it cannot
  // listen for, or a quiet stream) are fetched by page.
  check(job) {
    const quiet = Date.now() - this.lastEventAt > 2000;
    if (job.event_count > this.model.count && (quiet || FINAL.has(job.status))) {
      this.fill(job.event_count).then(() => { if (this.model.complete) this.finish(); }, () => {});
    }
  }
}
