// A virtual list over the LogModel: only the rows on screen are in the DOM.
//
// A row is one display line: an event's data split at its newlines (a multi-line
// event is several rows), numbered with the raw-log line it shows (GET /lines), so
// line numbers and #L permalinks match the raw download. Section headers are rows
// too; a folded section hides the rows inside it; end markers are hidden.
//
// Rows have a height in "units" of one line (more than one when wrapping). Chunks
// that are loaded know their rows exactly; the others count one row per event not
// hidden by a fold, until they load. Positions are prefix sums over chunks (a 1M
// log has a thousand), then over a chunk's rows. Browsers cap an element's height,
// so past MAX_PX the scrollbar maps proportionally onto the log.

import { runs, renderRuns, plainText, splitLines } from "./ansi.js";
import { CHUNK } from "./model.js";
import { duration } from "./util.js";

const MAX_PX = 8_000_000;
const BOTTOM_SLACK = 4;
const END_MARKER = /^\s*::endgroup::|section_end:\d+:/;

export class LogView {
  constructor(el, model, folds) {
    this.el = el;
    this.model = model;
    this.folds = folds;
    this.spacer = el.querySelector(".log-spacer");
    this.rows = el.querySelector(".log-rows");
    this.rowH = parseFloat(getComputedStyle(el).getPropertyValue("--row-h")) || 20;
    this.following = true;
    this.selection = null; // {from, to}: raw-log lines, inclusive
    this.search = null; // {gen, marks(index, line, plain) -> [[start, end, current]]}
    this.wrap = false;
    this.timestamps = "off"; // off | absolute | relative
    this.jobStart = null;
    this.layoutGen = 0;
    this.scheduled = false;
    this.onfollow = () => {};
    this.onselect = () => {};
    this.failed = new Map();
    this.layouts = new Map(); // chunk no -> {gen, rows: [{i, k, h, header}], tops}
    this.autoTop = 0;
    el.addEventListener("scroll", () => {
      const was = this.following;
      if (this.atBottom()) this.following = true;
      else if (el.scrollTop < this.autoTop - BOTTOM_SLACK) this.following = false;
      this.autoTop = Math.min(this.autoTop, el.scrollTop);
      if (was !== this.following) this.onfollow(this.following);
      this.schedule();
    });
    el.addEventListener("click", (e) => this.click(e));
    el.addEventListener("keydown", (e) => this.key(e));
    new ResizeObserver(() => { if (this.wrap) this.relayout(); this.schedule(); }).observe(el);
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => { this.scheduled = false; this.render(); });
  }

  relayout() { this.layoutGen++; this.schedule(); }

  // Characters that fit on a wrapped row (monospace: one width for all).
  columns() {
    if (!this.charW) {
      const probe = document.createElement("span");
      probe.textContent = "0".repeat(100);
      probe.className = "probe";
      this.rows.append(probe);
      this.charW = probe.getBoundingClientRect().width / 100 || 7.5;
      probe.remove();
    }
    const gutter = this.el.querySelector(".ln")?.getBoundingClientRect().width ?? 60;
    const ts = this.timestamps === "off" ? 0 : 14 * this.charW;
    return Math.max(20, Math.floor((this.el.clientWidth - gutter - ts - 4 * this.charW) / this.charW));
  }

  // The rows of a loaded chunk, given the folds: [{i, k, h, header, text}], and
  // their tops in units (a prefix sum).
  layout(no) {
    const c = this.model.chunks.get(no);
    if (!c) return null;
    // Line numbers arrive after a chunk's events (GET /lines): they count here too.
    const numbered = c.lines.length && c.lines[c.lines.length - 1] != null;
    const gen = `${this.layoutGen}:${this.folds.gen}:${c.events.length}:${numbered}:${this.model.styles}`;
    const cached = this.layouts.get(no);
    if (cached && cached.gen === gen) return cached;
    const cols = this.wrap ? this.columns() : 0;
    const rows = [], tops = [];
    let top = 0;
    for (let j = 0; j < c.events.length; j++) {
      const ev = c.events[j], i = ev.index;
      if (ev.type === "endgroup") continue; // a marker, like ::endgroup::
      const first = c.lines[j];
      const pieces = ev.type === "complete" ? [""] : splitLines(ev.data);
      for (let k = 0; k < pieces.length; k++) {
        const line = first == null ? null : first + k;
        const header = line == null ? null : this.folds.headerAt(i, line);
        if (this.folds.hidden(i, line)) continue; // a header inside a fold too
        if (!header && this.folds.endAt(i, line) && END_MARKER.test(pieces[k])) continue;
        let h = 1;
        if (cols && !header && pieces[k].length > cols) h = Math.ceil(plainText(pieces[k]).length / cols) || 1;
        rows.push({ i, k, h, header, line });
        tops.push(top);
        top += h;
      }
    }
    const out = { gen, rows, tops, height: top };
    this.layouts.set(no, out);
    return out;
  }

  // Units each chunk takes: exact when loaded, estimated (events not folded) if not.
  heights() {
    const chunks = Math.ceil(this.model.count / CHUNK);
    const out = new Array(chunks);
    for (let no = 0; no < chunks; no++) {
      const l = this.layout(no);
      if (l) out[no] = l.height;
      else {
        const start = no * CHUNK, end = Math.min(start + CHUNK, this.model.count);
        out[no] = end - start - this.folds.hiddenEvents(start, end);
      }
    }
    const offsets = new Array(chunks + 1);
    offsets[0] = 0;
    for (let no = 0; no < chunks; no++) offsets[no + 1] = offsets[no] + out[no];
    return offsets;
  }

  geometry() {
    const total = this.offsets[this.offsets.length - 1] * this.rowH;
    return { total, virt: Math.min(total, MAX_PX), view: this.el.clientHeight };
  }

  offset() {
    const { total, virt, view } = this.geometry();
    if (virt === total || virt <= view) return this.el.scrollTop;
    return (this.el.scrollTop / (virt - view)) * (total - view);
  }

  size() {
    const { virt } = this.geometry();
    if (this.spacer.style.height !== `${virt}px`) this.spacer.style.height = `${virt}px`;
    return virt;
  }

  setOffset(real) {
    this.offsets = this.heights();
    this.size();
    const { total, virt, view } = this.geometry();
    real = Math.max(0, Math.min(real, total - view));
    this.el.scrollTop = virt === total || virt <= view ? real : (real / (total - view)) * (virt - view);
  }

  atBottom() {
    const el = this.el;
    return el.scrollTop + el.clientHeight >= el.scrollHeight - BOTTOM_SLACK;
  }

  follow() {
    this.following = true;
    this.onfollow(true);
    this.render();
  }

  // Unit position of the row showing raw line `line` of event i (null: not laid out).
  unitOf(i, line) {
    this.offsets = this.heights();
    const no = Math.floor(i / CHUNK);
    const l = this.layout(no);
    if (!l) return null;
    let best = null;
    for (let r = 0; r < l.rows.length; r++) {
      const row = l.rows[r];
      if (row.i > i) break;
      if (row.i === i && (line == null || row.line == null || row.line <= line)) best = r;
    }
    if (best === null) return null;
    return this.offsets[no] + l.tops[best];
  }

  // Show event i's row of `line` a third of the way down (context above).
  reveal(i, line = null, toLine = line) {
    this.following = false;
    this.onfollow(false);
    const unit = this.unitOf(i, line);
    if (unit === null) { this.pending = { i, line, toLine }; this.fetch(Math.floor(i / CHUNK) * CHUNK, i + 1); return; }
    this.pending = null;
    const view = this.el.clientHeight, span = ((toLine ?? line ?? 0) - (line ?? 0) + 1) * this.rowH;
    const above = Math.max(this.rowH, Math.min(view / 3, view - span - this.rowH));
    this.setOffset(unit * this.rowH - above);
    this.render();
  }

  visible(i, line = null) {
    const unit = this.unitOf(i, line);
    if (unit === null) return false;
    const top = unit * this.rowH - this.offset();
    return top >= 0 && top + this.rowH <= this.el.clientHeight;
  }

  select(from, to) {
    this.selection = from === null ? null : { from: Math.min(from, to), to: Math.max(from, to) };
    this.schedule();
  }

  click(e) {
    const fold = e.target.closest(".fold");
    if (fold) { this.folds.toggle(Number(fold.dataset.section)); return; }
    const link = e.target.closest("a.ln");
    if (!link) return;
    e.preventDefault();
    const line = Number(link.dataset.line);
    const from = e.shiftKey && this.selection ? this.selection.from : line;
    this.select(from, line);
    this.onselect(this.selection);
  }

  // Enter or Space on a focused section header folds it; arrows move between headers.
  key(e) {
    const head = e.target.closest?.(".fold");
    if (!head) return;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); this.folds.toggle(Number(head.dataset.section)); }
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      this.folds.set(Number(head.dataset.section), e.key === "ArrowLeft");
    }
  }

  // The row at unit u: [chunk no, row index or -1 for a not yet loaded chunk, its top].
  rowAt(u) {
    const offsets = this.offsets;
    let lo = 0, hi = offsets.length - 2;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (offsets[mid] <= u) lo = mid; else hi = mid - 1; }
    const l = this.layout(lo);
    if (!l) return [lo, -1, u];
    let a = 0, b = l.rows.length - 1;
    const rel = u - offsets[lo];
    while (a < b) { const mid = (a + b + 1) >> 1; if (l.tops[mid] <= rel) a = mid; else b = mid - 1; }
    return [lo, a, offsets[lo] + (l.tops[a] ?? 0)];
  }

  render() {
    const { model, el, rowH } = this;
    this.offsets = this.heights();
    const virt = this.size();
    const digits = String(Math.max(1, model.lastLine)).length;
    if (digits !== this.digits) { this.digits = digits; el.style.setProperty("--ln-digits", String(digits)); }
    el.classList.toggle("empty", model.count === 0);
    el.classList.toggle("wrap", this.wrap);
    el.classList.toggle("stamps", this.timestamps !== "off");
    if (this.following) { el.scrollTop = el.scrollHeight; this.autoTop = el.scrollTop; }
    const offset = this.offset();
    const totalUnits = this.offsets[this.offsets.length - 1];
    const firstUnit = Math.max(0, Math.floor(offset / rowH));
    const lastUnit = Math.min(totalUnits, firstUnit + Math.ceil(el.clientHeight / rowH) + 1);
    const wanted = [];
    let u = firstUnit, startTop = null;
    while (u < lastUnit) {
      const [no, r, top] = this.rowAt(u);
      if (startTop === null) startTop = top;
      if (r < 0) {
        const start = no * CHUNK, next = this.offsets[no + 1];
        const i = start + (u - this.offsets[no]);
        wanted.push({ key: `m${i}`, i, missing: true, h: 1 });
        u = Math.min(next, u + 1);
        continue;
      }
      const l = this.layout(no);
      const row = l.rows[r];
      wanted.push({ key: `r${row.i}:${row.k}`, ...row });
      u = top + row.h;
    }
    const top = Math.max(0, Math.min(el.scrollTop - (offset - (startTop ?? firstUnit) * rowH), virt - (lastUnit - firstUnit) * rowH));
    this.rows.style.transform = `translateY(${top}px)`;
    this.fetchRange(wanted);
    const kept = new Map(), spare = [];
    for (const node of [...this.rows.children]) {
      if (!node.dataset.row || kept.has(node.dataset.row) || !wanted.some((w) => w.key === node.dataset.row)) { node.remove(); spare.push(node); }
      else kept.set(node.dataset.row, node);
    }
    const now = Date.now();
    let ref = this.rows.firstElementChild;
    for (const w of wanted) {
      const node = kept.get(w.key) ?? spare.pop() ?? document.createElement("div");
      const ev = w.missing ? null : model.event(w.i);
      const key = this.key_(w, ev, now);
      if (node.dataset.key !== key) this.fill(node, w, ev, key);
      if (node !== ref) this.rows.insertBefore(node, ref);
      else ref = ref.nextElementSibling;
    }
    this.shown = wanted;
    if (this.pending) { const p = this.pending; if (this.unitOf(p.i, p.line) !== null) this.reveal(p.i, p.line, p.toLine); }
    if (this.firstPaint === undefined && wanted.length && !wanted.some((w) => w.missing)) {
      this.firstPaint = performance.now();
    }
  }

  fetchRange(wanted) {
    if (!wanted.length) return;
    this.fetch(wanted[0].i, wanted[wanted.length - 1].i + 1);
  }

  // Load what is on screen; restyle chunks whose entry colours are not known yet.
  fetch(first, last) {
    const { model } = this;
    if (last <= first) return;
    const a = Math.floor(first / CHUNK), b = Math.floor((last - 1) / CHUNK);
    model.keep = [a, b];
    for (let no = a; no <= b; no++) {
      const c = model.chunks.get(no);
      if (c) {
        if (!c.entryExact) model.resolve(no).catch(() => {});
        continue;
      }
      if (Date.now() - (this.failed.get(no) ?? 0) < 1000) { this.schedule(); continue; }
      model.load(no).then(() => {
        this.failed.delete(no);
        model.resolve(no).catch(() => {});
        this.schedule();
      }, () => { this.failed.set(no, Date.now()); this.schedule(); });
    }
  }

  key_(w, ev, now) {
    if (!ev) return `${w.key}:-`;
    const sel = this.selected(w.line);
    let k = `${w.key}:${w.line}:${w.h}:${this.model.styles}:${sel ? 1 : 0}:${this.search?.gen ?? 0}:${this.timestamps}:${this.wrap}`;
    if (w.header) {
      const s = w.header;
      k += `:${this.folds.isFolded(s.id)}:${s.title}:${s.finished_at ?? Math.floor(now / 1000)}`;
    }
    return k;
  }

  selected(line) {
    return this.selection && line != null && line >= this.selection.from && line <= this.selection.to;
  }

  stamp(ev) {
    const t = Date.parse(ev.timestamp);
    if (this.timestamps === "relative") {
      const base = this.jobStart ?? t;
      const s = Math.max(0, (t - base) / 1000);
      const m = Math.floor(s / 60);
      return `+${String(m).padStart(2, "0")}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
    }
    return ev.timestamp.slice(11, 23);
  }

  fill(node, w, ev, key) {
    node.dataset.key = key;
    node.dataset.row = w.key;
    node.dataset.index = String(w.i);
    if (w.line != null) node.dataset.line = String(w.line); else delete node.dataset.line;
    node.replaceChildren();
    node.className = `row${this.selected(w.line) ? " sel" : ""}`;
    node.style.height = w.h > 1 ? `${w.h * this.rowH}px` : "";
    const ln = document.createElement("a");
    ln.className = "ln";
    ln.tabIndex = -1;
    if (w.line != null && ev?.type !== "complete") {
      ln.href = `#L${w.line}`;
      ln.dataset.line = String(w.line);
      ln.textContent = String(w.line);
    }
    node.append(ln);
    if (this.timestamps !== "off") {
      const ts = document.createElement("span");
      ts.className = "ts";
      ts.textContent = ev ? this.stamp(ev) : "";
      node.append(ts);
    }
    const txt = document.createElement("span");
    txt.className = "txt";
    node.append(txt);
    if (!ev) { node.classList.add("missing"); txt.textContent = "…"; return; }
    node.classList.add(`t-${ev.type.replace(/[^a-z0-9_-]/g, "_")}`);
    if (ev.type === "complete") {
      txt.textContent = ev.success ? "✔ Job succeeded" : "✖ Job failed";
      node.classList.add(ev.success ? "ok" : "bad");
      return;
    }
    if (w.header) return this.fillHeader(node, txt, w.header);
    if (ev.type !== "log" && w.k === 0) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = ev.type;
      txt.append(tag);
    }
    const piece = splitLines(ev.data)[w.k] ?? "";
    const r = runs(piece, this.model.stateAt(w.i, w.k));
    const plain = r.runs.map((x) => x.text).join("");
    renderRuns(txt, r.runs, this.search ? this.search.marks(w.i, w.line, plain) : []);
  }

  fillHeader(node, txt, s) {
    const folded = this.folds.isFolded(s.id);
    node.classList.add("head");
    node.style.setProperty("--depth", String(s.depth));
    const button = document.createElement("button");
    button.type = "button";
    button.className = "fold";
    button.dataset.section = String(s.id);
    button.setAttribute("aria-expanded", String(!folded));
    button.textContent = `${folded ? "▸" : "▾"} ${s.title || s.name}`;
    txt.append(button);
    const dur = document.createElement("span");
    dur.className = "dur";
    if (s.duration_seconds != null) dur.textContent = duration(s.duration_seconds * 1000);
    else dur.textContent = `${duration(Date.now() - Date.parse(s.started_at))} …`;
    node.append(dur);
  }

  // Rows currently in the DOM, for tests: [index, text] in order.
  visibleRows() {
    return [...this.rows.children].map((r) => [Number(r.dataset.index), r.querySelector(".txt").textContent]);
  }
}
