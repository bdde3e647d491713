// The log as the page knows it: events 0..count-1, held in chunks of CHUNK events
// loaded on demand (tail first), with a bounded number in memory.
//
// Invariants the rest of the page relies on:
// - `count` is the next index; every index below it exists on the server, and the
//   events held are exactly the server's (appends only at `count`, pages by index).
// - each held event has the SGR style in force at its start (`stateAt`), carried
//   across events; a chunk whose predecessors are not loaded gets it by scanning back
//   to the last full reset (see resolve()).
// - each held event knows the raw-log line it starts on (`lineOf`): the server says
//   where a chunk's first event starts (GET /lines), the rest is counted here, the
//   same way the server counts (newlines before it, plus one).
// - `sections` is the server's section index: loaded once, then kept current by the
//   `section` member of the events that open or close one (no second channel).

import { DEFAULT, advance, splitLines } from "./ansi.js";
import { eventsPage, getSections, lineAt } from "./api.js";

const newlines = (data) => {
  let n = 0;
  if (data) for (let p = data.indexOf("\n"); p !== -1; p = data.indexOf("\n", p + 1)) n++;
  return n;
};

export const CHUNK = 1000;
const MAX_CHUNKS = 48; // ~48k events in memory, whatever the log's length
const RESOLVE_LIMIT = 20; // chunks scanned back for a reset before assuming defaults

class Chunk {
  constructor(no) {
    this.no = no;
    this.events = [];
    this.states = [];
    this.entry = DEFAULT;
    this.entryExact = false;
    this.exit = DEFAULT;
    this.hasReset = false;
    this.used = 0;
    this.lines = []; // raw-log line each event starts on (null until the first is known)
  }
  get start() { return this.no * CHUNK; }
  get exitExact() { return this.entryExact || this.hasReset; }
}

export class LogModel {
  constructor(jobId) {
    this.jobId = jobId;
    this.count = 0;
    this.chunks = new Map();
    this.exits = new Map(); // chunk no -> exact exit style, kept after eviction
    this.inflight = new Map();
    this.resolving = new Set();
    this.seen = new Set(); // chunks ever loaded: step durations need no unseen gaps
    this.steps = new Map(); // index -> step event, kept after eviction
    this.complete = null;
    this.sections = new Map(); // id -> section, as GET /sections shows it
    this.onsections = () => {};
    this.keep = [0, 0]; // chunk range the view shows: never evicted
    this.clock = 0;
    this.styles = 0; // bumps when held events' styles change: rows must re-render
    this.onchange = () => {};
    this.onappend = () => {};
  }

  chunkOf(i) { return this.chunks.get(Math.floor(i / CHUNK)); }

  event(i) {
    const c = this.chunkOf(i);
    if (!c) return null;
    c.used = ++this.clock;
    return c.events[i - c.start] ?? null;
  }

  // The style in force at the start of event i (of its display line k).
  stateAt(i, k = 0) {
    const c = this.chunkOf(i);
    let state = c ? c.states[i - c.start] ?? DEFAULT : DEFAULT;
    if (k > 0) {
      const pieces = splitLines(c?.events[i - c.start]?.data);
      for (let p = 0; p < k && p < pieces.length; p++) state = advance(state, pieces[p]).state;
    }
    return state;
  }

  has(i) { return this.event(i) !== null; }

  // The raw-log line event i starts on, when known.
  lineOf(i) {
    const c = this.chunkOf(i);
    return c ? c.lines[i - c.start] ?? null : null;
  }

  async loadSections() {
    const { sections } = await getSections(this.jobId);
    for (const s of sections) this.sections.set(s.id, s);
    this.onsections();
  }

  // Give a chunk its line numbers from where its first event starts.
  number(c, first) {
    let line = first;
    c.lines = c.events.map((ev) => { const at = line; line += newlines(ev.data); return at; });
  }

  // Open at the end of the log: load the chunk holding the last event, so `count`
  // comes from events actually held. Whatever was appended since, the stream
  // delivers from `count` on.
  async openTail(eventCount) {
    const no = eventCount ? Math.floor((eventCount - 1) / CHUNK) : 0;
    const c = this.adopt(new Chunk(no));
    const first = lineAt(this.jobId, { index: c.start });
    let from = c.start;
    while (from < c.start + CHUNK) {
      const page = await eventsPage(this.jobId, from, c.start + CHUNK - from);
      for (const ev of page.events) if (ev.index === from) { this.push(c, ev); from++; }
      if (!page.events.length || page.complete || from >= eventCount) break;
    }
    this.count = from;
    this.number(c, (await first).line);
    this.changed();
  }

  // Load one older chunk (fully below `count`); concurrent callers share the fetch.
  load(no) {
    if (this.chunks.has(no)) return Promise.resolve(this.chunks.get(no));
    if (this.inflight.has(no)) return this.inflight.get(no);
    const job = this.fetchChunk(no).finally(() => this.inflight.delete(no));
    this.inflight.set(no, job);
    return job;
  }

  async fetchChunk(no) {
    const start = no * CHUNK, end = Math.min(start + CHUNK, this.count);
    const first = lineAt(this.jobId, { index: start });
    const events = [];
    let from = start;
    while (from < end) {
      const page = await eventsPage(this.jobId, from, end - from);
      const fresh = page.events.filter((e) => e.index >= from && e.index < end);
      if (!fresh.length) break;
      events.push(...fresh);
      from = fresh[fresh.length - 1].index + 1;
    }
    if (this.chunks.has(no)) return this.chunks.get(no); // appended meanwhile
    const c = new Chunk(no);
    this.inherit(c);
    for (const ev of events) this.push(c, ev);
    this.number(c, (await first).line);
    if (this.chunks.has(no)) return this.chunks.get(no);
    this.adopt(c);
    this.cascade(c);
    this.evict();
    this.changed();
    return c;
  }

  adopt(c) {
    this.chunks.set(c.no, c);
    this.seen.add(c.no);
    c.used = ++this.clock;
    if (!c.events.length) this.inherit(c);
    return c;
  }

  // Entry style from the previous chunk's exit, when that is known exactly.
  inherit(c) {
    if (c.no === 0) { c.entry = DEFAULT; c.entryExact = true; return; }
    const prev = this.chunks.get(c.no - 1);
    if (prev && prev.exitExact) { c.entry = prev.exit; c.entryExact = true; }
    else if (this.exits.has(c.no - 1)) { c.entry = this.exits.get(c.no - 1); c.entryExact = true; }
    else if (prev) { c.entry = prev.exit; c.entryExact = false; }
    else { c.entry = DEFAULT; c.entryExact = false; }
  }

  push(c, ev) {
    const st = c.events.length ? c.exit : c.entry;
    const r = advance(st, ev.data);
    c.events.push(ev);
    c.states.push(st);
    c.exit = r.state;
    c.hasReset ||= r.reset;
    if (c.exitExact) this.exits.set(c.no, c.exit);
    if (ev.type === "step") this.steps.set(ev.index, ev);
    if (ev.type === "complete") this.complete = ev;
    if (ev.section) {
      for (const s of [...ev.section.opened, ...ev.section.closed]) this.sections.set(s.id, s);
      this.onsections();
    }
  }

  // Recompute a chunk's styles from its entry, then the next chunks' while they change.
  restyle(c) {
    const events = c.events;
    c.events = []; c.states = []; c.exit = c.entry; c.hasReset = false;
    this.styles++;
    for (const ev of events) this.push(c, ev);
  }

  // The last line of the log as held (for sizing): where the next event would start.
  get lastLine() {
    const c = this.chunkOf(this.count - 1);
    if (!c || !c.events.length) return 0;
    const j = c.events.length - 1, ev = c.events[j];
    const at = c.lines[j];
    if (at == null) return 0;
    const data = ev.data ?? "";
    return at + newlines(data) - (data.endsWith("\n") || !data ? 1 : 0);
  }

  cascade(c) {
    for (let next = this.chunks.get(c.no + 1); next && !next.entryExact; next = this.chunks.get(next.no + 1)) {
      const before = next.entry;
      this.inherit(next);
      if (next.entry === before && !next.entryExact) break;
      this.restyle(next);
    }
  }

  // Make chunk `no`'s entry style exact: load earlier chunks until one whose exit is
  // known (it starts at 0, holds a full SGR reset, or follows a known one), then
  // restyle forward. Without a reset in RESOLVE_LIMIT chunks, assume defaults there
  // rather than read a million lines.
  async resolve(no) {
    const target = this.chunks.get(no);
    if (!target || target.entryExact || this.resolving.has(no)) return;
    this.resolving.add(no);
    try {
      let k = no - 1;
      for (; k >= 0 && no - k <= RESOLVE_LIMIT; k--) {
        if (this.exits.has(k)) break;
        if ((await this.load(k)).exitExact) break;
      }
      for (let j = k + 1; j <= no; j++) {
        const c = this.chunks.get(j);
        if (!c) break; // evicted meanwhile; the next render asks again
        if (c.entryExact) continue;
        this.inherit(c);
        if (j === k + 1 && !c.entryExact) { c.entry = DEFAULT; c.entryExact = true; }
        this.restyle(c);
      }
      this.changed();
    } finally {
      this.resolving.delete(no);
    }
  }

  // Append the event at `count` (the stream guarantees it is exactly that one).
  append(ev) {
    const no = Math.floor(ev.index / CHUNK);
    const prev = this.chunkOf(ev.index - 1);
    const c = this.chunks.get(no) ?? this.adopt(new Chunk(no));
    const before = ev.index === 0 ? 1 : prev?.lines[ev.index - 1 - prev.start];
    const prevEv = ev.index === 0 ? null : prev?.events[ev.index - 1 - prev.start];
    this.push(c, ev);
    c.lines[ev.index - c.start] = before == null ? null : before + newlines(prevEv?.data);
    this.count = ev.index + 1;
    this.onappend(ev);
  }

  // Drop least recently used chunks, never the tail nor what is on screen.
  evict() {
    const tail = Math.floor(Math.max(0, this.count - 1) / CHUNK);
    while (this.chunks.size > MAX_CHUNKS) {
      let victim = null;
      for (const c of this.chunks.values()) {
        if (c.no >= tail || (c.no >= this.keep[0] && c.no <= this.keep[1])) continue;
        if (!victim || c.used < victim.used) victim = c;
      }
      if (!victim) return;
      this.chunks.delete(victim.no);
    }
  }

  changed() { this.onchange(); }

  // When did the step at `i` end? The next step, else the complete event, provided
  // no unseen chunk lies between (it could hold an earlier step). null: unknown.
  stepEnd(i) {
    let next = null;
    for (const j of this.steps.keys()) if (j > i && (next === null || j < next)) next = j;
    const end = next ?? this.complete?.index ?? null;
    const to = Math.floor((end ?? this.count - 1) / CHUNK);
    for (let no = Math.floor(i / CHUNK); no <= to; no++) if (!this.seen.has(no)) return null;
    if (end === null) return { running: true };
    return { timestamp: (next !== null ? this.steps.get(next) : this.complete).timestamp };
  }

  // For tests and the benchmark: every held event, in order.
  snapshot() {
    const out = [];
    for (const no of [...this.chunks.keys()].sort((a, b) => a - b)) {
      for (const ev of this.chunks.get(no).events) out.push(ev);
    }
    return out;
  }
}
