// Search within the whole log, not only what is loaded: chunks are scanned in index
// order (loading the ones not held; the model's LRU keeps memory bounded), new
// events are scanned as they arrive. Matches are (event index, offset in the row's
// visible text), kept in two flat arrays sorted by index.

import { plainText } from "./ansi.js";
import { CHUNK } from "./model.js";

export class LogSearch {
  constructor(model) {
    this.model = model;
    this.query = "";
    this.lower = "";
    this.idx = [];
    this.pos = [];
    this.current = -1;
    this.next = 0; // next event index to scan
    this.done = true;
    this.error = null;
    this.gen = 0; // bumps whenever highlighted rows could change
    this.runs = 0; // bumps per query: an older scan stops
    this.onupdate = () => {};
    this.onreveal = () => {};
  }

  get count() { return this.idx.length; }
  get progress() { return this.model.count ? this.next / this.model.count : 1; }

  async set(query) {
    this.query = query;
    this.lower = query.toLowerCase();
    this.idx = []; this.pos = []; this.current = -1; this.next = 0; this.error = null;
    this.done = !query;
    const run = ++this.runs;
    this.gen++;
    this.onupdate();
    if (!query) return;
    try {
      await this.scan(run);
    } catch (err) {
      if (run === this.runs) { this.error = err.message; this.onupdate(); }
    }
  }

  async scan(run) {
    const { model } = this;
    let shown = 0;
    const ahead = new Map(); // a few chunks fetched ahead: the scan is bound by round trips
    while (this.next < model.count) {
      const no = Math.floor(this.next / CHUNK);
      for (let k = no; k < no + 3 && k * CHUNK < model.count; k++) {
        if (ahead.has(k)) continue;
        const chunk = model.chunks.get(k) ?? model.load(k);
        chunk.catch?.(() => {}); // awaited below; a newer query may never await it
        ahead.set(k, chunk);
      }
      const chunk = await ahead.get(no);
      ahead.delete(no);
      if (run !== this.runs) return;
      const before = this.next;
      for (const ev of chunk.events) if (ev.index >= this.next) this.scanEvent(ev);
      if (this.next === before) break; // nothing new in that chunk: do not spin
      if (this.current === -1 && this.idx.length) { this.current = 0; this.onreveal(this.idx[0]); }
      if (this.idx.length !== shown) { shown = this.idx.length; this.gen++; }
      this.onupdate();
    }
    this.done = true;
    this.gen++;
    this.onupdate();
  }

  scanEvent(ev) {
    this.next = ev.index + 1;
    if (ev.type === "complete" || !ev.data) return;
    const text = plainText(ev.data).toLowerCase();
    for (let p = text.indexOf(this.lower); p !== -1; p = text.indexOf(this.lower, p + this.lower.length)) {
      this.idx.push(ev.index);
      this.pos.push(p);
    }
  }

  // A live event: scanned now if the scan is over, else the scan will reach it.
  onAppend(ev) {
    if (!this.query || !this.done || ev.index !== this.next) return;
    const n = this.idx.length;
    this.scanEvent(ev);
    if (this.idx.length !== n) {
      if (this.current === -1) this.current = 0;
      this.gen++;
      this.onupdate();
    }
  }

  // [start, end, isCurrent] for the matches in row i, whose visible text is `plain`.
  marks(i, plain) {
    if (!this.lower || !this.idx.length) return [];
    let lo = 0, hi = this.idx.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (this.idx[mid] < i) lo = mid + 1; else hi = mid; }
    const out = [];
    for (let k = lo; k < this.idx.length && this.idx[k] === i; k++) {
      out.push([this.pos[k], this.pos[k] + this.lower.length, k === this.current]);
    }
    return out;
  }

  step(delta) {
    const n = this.idx.length;
    if (!n) return;
    this.current = ((this.current < 0 ? (delta > 0 ? -1 : 0) : this.current) + delta + n) % n;
    this.gen++;
    this.onupdate();
    this.onreveal(this.idx[this.current]);
  }
}
