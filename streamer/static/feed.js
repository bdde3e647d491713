// The change feed of the signed-in user's jobs (GET /api/v1/jobs/changes): one
// connection per page, which the job list and the job header update from, instead
// of polling. It resumes exactly by sequence number; a resume point the server no
// longer keeps (410) starts over from now, and the views re-read what they show.
// While it is down, the badge (#feed-state) says so, and views fall back to polling.

import { openStream, messages, retryDelay } from "./sse.js";

class Feed {
  constructor() {
    this.after = null; // the last sequence number seen (null: from now)
    this.live = false;
    this.failures = 0;
    this.started = false;
    this.listeners = new Set();
    this.states = new Set();
  }

  // `fn(change)` for each change ({seq, type, job}), and {type: "resync"} when some
  // were missed (the view should re-read what it shows). Starts the feed.
  on(fn) {
    this.listeners.add(fn);
    if (!this.started) { this.started = true; this.connect(); }
    return () => this.listeners.delete(fn);
  }

  // `fn(live)` now and whenever the connection comes or goes.
  onState(fn) {
    this.states.add(fn);
    fn(this.live);
  }

  setLive(live) {
    if (live === this.live) return;
    this.live = live;
    for (const fn of this.states) fn(live);
  }

  emit(change) {
    for (const fn of this.listeners) fn(change);
  }

  async connect() {
    try {
      const headers = this.after === null ? {} : { "Last-Event-ID": String(this.after) };
      const response = await openStream("/jobs/changes", { headers });
      if (response.status === 410) {
        this.after = null; // changes were dropped while away: from now, and re-read
        this.emit({ type: "resync" });
        throw new Error("resync");
      }
      if (response.status === 401) { this.failures += 1; this.setLive(false); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      for await (const m of messages(response)) {
        if (m.comment !== undefined) {
          const at = /next_seq=(\d+)/.exec(m.comment);
          if (at && this.after === null) this.after = Number(at[1]) - 1;
          this.failures = 0;
          this.setLive(true);
          continue;
        }
        const change = JSON.parse(m.data);
        if (this.after !== null && change.seq <= this.after) continue;
        this.after = change.seq;
        this.emit(change);
      }
    } catch { /* the server went away, or answered an error: retry */ }
    this.failures += 1;
    this.setLive(false);
    setTimeout(() => this.connect(), retryDelay(this.failures - 1));
  }
}

export const feed = new Feed();
// For tests and curious users in the console.
window.streamerFeed = feed;

// The badge in the header: hidden while the feed is live (or not yet tried).
export function showFeedState() {
  const badge = document.getElementById("feed-state");
  feed.onState((live) => { badge.hidden = live || feed.failures === 0; });
}

// One job's changes: `onjob(job)` for each; `poll()` every `ms` while the feed is
// down (and not at all while it is live).
export function watchJob(id, onjob, poll, ms = 3000) {
  let timer = null;
  feed.on((change) => {
    if (change.type === "resync") poll();
    else if (change.job.id === id && change.type !== "deleted") onjob(change.job);
  });
  feed.onState((live) => {
    clearInterval(timer);
    if (!live) timer = setInterval(poll, ms);
  });
}
