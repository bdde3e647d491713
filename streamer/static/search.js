// Search through the server: the page never downloads the log to search it.
//
// A query asks GET /search for the first page of matches and, beside it, for the
// total count (the server scans the whole stored log), then fetches the positions of
// the rest a page at a time in the background, so next/previous walk every match. Lines
// that arrive afterwards are matched here as they are appended (the same text: the
// line without escapes). Highlights inside a row are computed from its own text.

import { search as searchApi } from "./api.js";
import { plainText, splitLines } from "./ansi.js";

const PAGE = 1000;

export class LogSearch {
  constructor(model) {
    this.model = model;
    this.query = "";
    this.regex = false;
    this.caseSensitive = false;
    this.matches = []; // [{index, line}] in log order
    this.total = 0;
    this.counted = false; // total is the server's count, not only the matches seen so far
    this.current = -1;
    this.next = 0; // the next event index the server has not searched for this query
    this.done = true;
    this.error = null;
    this.gen = 0;
    this.runs = 0;
    this.pattern = null;
    this.onupdate = () => {};
    this.onreveal = () => {};
  }

  get count() { return this.total; }
  get idx() { return this.matches.map((m) => m.index); }

  async set(query, { regex = this.regex, caseSensitive = this.caseSensitive } = {}) {
    this.query = query;
    this.regex = regex;
    this.caseSensitive = caseSensitive;
    this.matches = []; this.total = 0; this.current = -1; this.next = 0; this.error = null;
    this.done = !query;
    this.pattern = query ? this.compile() : null;
    const run = ++this.runs;
    this.gen++;
    this.onupdate();
    if (!query || (regex && !this.pattern)) return;
    this.counted = false;
    // The count scans the whole log: asked for beside the first page, which comes back
    // as soon as it is full, so the first match shows before the count does.
    const counting = searchApi(this.model.jobId, {
      q: query, regex, caseSensitive, fromIndex: 0, limit: 1, count: true,
    }).then((page) => {
      if (run !== this.runs) return;
      this.total = Math.max(page.total, this.matches.length);
      this.counted = true;
      this.onupdate();
    }, () => {});
    try {
      await this.fetch(run, true);
      await counting; // the rest of the positions after the count: they would slow it
      while (run === this.runs && !this.done) await this.fetch(run, false);
    } catch (err) {
      if (run === this.runs) { this.error = err.message; this.done = true; this.onupdate(); }
    }
  }

  compile() {
    try {
      const source = this.regex ? this.query : this.query.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      return new RegExp(source, this.caseSensitive ? "g" : "gi");
    } catch {
      return null; // the server says what is wrong with it
    }
  }

  async fetch(run, first) {
    const limit = first ? 200 : PAGE;
    const page = await searchApi(this.model.jobId, {
      q: this.query, regex: this.regex, caseSensitive: this.caseSensitive,
      fromIndex: this.next, limit, count: false,
    });
    if (run !== this.runs) return;
    this.matches.push(...page.matches);
    if (!this.counted) this.total = this.matches.length;
    const before = this.next;
    this.next = page.next_index;
    this.done = page.next_index >= this.model.count || page.matches.length === 0 || page.next_index === before;
    if (this.done) this.catchUp();
    if (this.current === -1 && this.matches.length) { this.current = 0; this.onreveal(this.matches[0]); }
    this.gen++;
    this.onupdate();
  }

  // Events the model holds past where the server's search ended: match them here.
  catchUp() {
    for (let i = this.next; i < this.model.count; i++) {
      const ev = this.model.event(i);
      if (!ev) break;
      this.scanEvent(ev);
    }
  }

  scanEvent(ev) {
    if (ev.index !== this.next) return;
    this.next = ev.index + 1;
    if (!this.pattern || ev.type === "complete" || !ev.data) return;
    const line = this.model.lineOf(ev.index);
    splitLines(ev.data).forEach((piece, k) => {
      const text = plainText(piece);
      this.pattern.lastIndex = 0;
      if (text && this.pattern.test(text)) {
        this.matches.push({ index: ev.index, line: line == null ? null : line + k });
        this.total++;
      }
    });
  }

  // A live event: matched now once the server's search has caught up to it.
  onAppend(ev) {
    if (!this.query || !this.done) return;
    const n = this.matches.length;
    this.scanEvent(ev);
    if (this.matches.length !== n) {
      if (this.current === -1) this.current = 0;
      this.gen++;
      this.onupdate();
    }
  }

  // [start, end, isCurrent] for the matches in the row of event i, raw line `line`.
  marks(i, line, plain) {
    if (!this.pattern || !this.matches.length) return [];
    const cur = this.matches[this.current];
    const isCurrent = cur && cur.index === i && (cur.line == null || cur.line === line);
    const out = [];
    this.pattern.lastIndex = 0;
    for (const m of plain.matchAll(this.pattern)) {
      if (!m[0].length) break;
      out.push([m.index, m.index + m[0].length, isCurrent && !out.length]);
    }
    return out;
  }

  step(delta) {
    const n = this.matches.length;
    if (!n) return;
    this.current = ((this.current < 0 ? (delta > 0 ? -1 : 0) : this.current) + delta + n) % n;
    this.gen++;
    this.onupdate();
    this.onreveal(this.matches[this.current]);
  }
}
