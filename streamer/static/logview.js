// A virtual list over the LogModel: only the rows on screen are in the DOM, every row
// has the same height, so row i sits at i * rowHeight and nothing needs measuring.
//
// Browsers cap an element's height (Chrome ~33M px, Firefox ~17M px), so past
// MAX_PX the scrollbar maps proportionally onto the log instead of 1:1.

import { runs, renderRuns } from "./ansi.js";
import { CHUNK } from "./model.js";
import { duration } from "./util.js";

const MAX_PX = 8_000_000;
const BOTTOM_SLACK = 4; // px: "at the bottom" despite sub-pixel scroll positions

export class LogView {
  constructor(el, model) {
    this.el = el;
    this.model = model;
    this.spacer = el.querySelector(".log-spacer");
    this.rows = el.querySelector(".log-rows");
    this.rowH = parseFloat(getComputedStyle(el).getPropertyValue("--row-h")) || 20;
    this.following = true;
    this.selection = null; // {from, to}: event indexes, inclusive
    this.search = null; // {gen, marks(index, plain) -> [[start, end, current]]}
    this.selGen = 0;
    this.scheduled = false;
    this.onfollow = () => {};
    this.onselect = () => {};
    this.failed = new Map(); // chunk -> time of the last failed load, to retry gently
    // The scroll position the view itself last set: a scroll event that finds the log
    // taller than that position's bottom is the log growing, not the user leaving it.
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
    new ResizeObserver(() => this.schedule()).observe(el);
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => { this.scheduled = false; this.render(); });
  }

  // Geometry: `total` is the real height of the log, `virt` the spacer's.
  geometry() {
    const total = this.model.count * this.rowH;
    return { total, virt: Math.min(total, MAX_PX), view: this.el.clientHeight };
  }

  offset() {
    const { total, virt, view } = this.geometry();
    if (virt === total || virt <= view) return this.el.scrollTop;
    return (this.el.scrollTop / (virt - view)) * (total - view);
  }

  // The spacer must be as tall as the log before scrollTop can go that far.
  size() {
    const { virt } = this.geometry();
    if (this.spacer.style.height !== `${virt}px`) this.spacer.style.height = `${virt}px`;
    return virt;
  }

  setOffset(real) {
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

  // Scroll so rows i..to show, i a third of the way down when the range leaves room
  // (context above, like an opened permalink), nearer the top when it does not.
  reveal(i, to = i) {
    this.following = false;
    this.onfollow(false);
    const view = this.el.clientHeight, span = (to - i + 1) * this.rowH;
    const above = Math.max(this.rowH, Math.min(view / 3, view - span - this.rowH));
    this.setOffset(i * this.rowH - above);
    this.render();
  }

  // Is row i fully on screen?
  visible(i) {
    const top = i * this.rowH - this.offset();
    return top >= 0 && top + this.rowH <= this.el.clientHeight;
  }

  select(from, to) {
    this.selection = from === null ? null : { from: Math.min(from, to), to: Math.max(from, to) };
    this.selGen++;
    this.schedule();
  }

  click(e) {
    const link = e.target.closest("a.ln");
    if (!link) return;
    e.preventDefault();
    const i = Number(link.dataset.index);
    const from = e.shiftKey && this.selection ? this.selection.from : i;
    this.select(from, i);
    this.onselect(this.selection);
  }

  render() {
    const { model, el, rowH } = this;
    const virt = this.size();
    // The gutter fits the largest line number; an empty log says it is waiting.
    const digits = String(Math.max(0, model.count - 1)).length;
    if (digits !== this.digits) { this.digits = digits; el.style.setProperty("--ln-digits", String(digits)); }
    el.classList.toggle("empty", model.count === 0);
    if (this.following) { el.scrollTop = el.scrollHeight; this.autoTop = el.scrollTop; }
    const offset = this.offset();
    const first = Math.max(0, Math.floor(offset / rowH));
    const last = Math.min(model.count, first + Math.ceil(el.clientHeight / rowH) + 1);
    const top = Math.max(0, Math.min(el.scrollTop - (offset - first * rowH), virt - (last - first) * rowH));
    this.rows.style.transform = `translateY(${top}px)`;
    this.fetch(first, last);
    // A row stays bound to its index while on screen: scrolling by a few rows moves
    // a few elements instead of refilling every one.
    const kept = new Map(), spare = [];
    for (const row of [...this.rows.children]) {
      const i = Number(row.dataset.index);
      if (i >= first && i < last && !kept.has(i)) kept.set(i, row);
      else { row.remove(); spare.push(row); }
    }
    const now = Date.now();
    let ref = this.rows.firstElementChild;
    for (let i = first; i < last; i++) {
      const row = kept.get(i) ?? spare.pop() ?? document.createElement("div");
      const ev = model.event(i);
      const key = this.key(i, ev, now);
      if (row.dataset.key !== key) this.fill(row, i, ev, key);
      if (row !== ref) this.rows.insertBefore(row, ref);
      else ref = ref.nextElementSibling;
    }
    this.first = first;
    this.last = last;
    // When rows with text were first on screen (ms since navigation): the benchmark's mark.
    if (this.firstPaint === undefined && last > first && model.has(first) && model.has(last - 1)) {
      this.firstPaint = performance.now();
    }
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
      }, () => { this.failed.set(no, Date.now()); this.schedule(); });
    }
  }

  // What a row shows depends on these; same key, same row, no DOM work.
  key(i, ev, now) {
    if (!ev) return `${i}:-`;
    const sel = this.selection && i >= this.selection.from && i <= this.selection.to;
    let k = `${i}:${this.model.styles}:${sel ? 1 : 0}:${this.search?.gen ?? 0}`;
    if (ev.type === "step") {
      const end = this.model.stepEnd(i);
      k += end?.running ? `:${Math.floor(now / 1000)}` : `:${end?.timestamp ?? "?"}`;
    }
    return k;
  }

  fill(row, i, ev, key) {
    row.dataset.key = key;
    row.dataset.index = String(i);
    row.replaceChildren();
    const sel = this.selection && i >= this.selection.from && i <= this.selection.to;
    row.className = `row${sel ? " sel" : ""}`;
    const ln = document.createElement("a");
    ln.className = "ln";
    ln.href = `#L${i}`;
    ln.tabIndex = -1; // rows come and go while scrolling; keyboard users use the URL
    ln.dataset.index = String(i);
    ln.textContent = String(i);
    const txt = document.createElement("span");
    txt.className = "txt";
    row.append(ln, txt);
    if (!ev) {
      row.classList.add("missing");
      txt.textContent = "…";
      return;
    }
    row.classList.add(`t-${ev.type.replace(/[^a-z0-9_-]/g, "_")}`);
    if (ev.type === "complete") {
      txt.textContent = ev.success ? "✔ Job succeeded" : "✖ Job failed";
      row.classList.add(ev.success ? "ok" : "bad");
      return;
    }
    if (ev.type !== "log" && ev.type !== "step") {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = ev.type;
      txt.append(tag);
    }
    const r = runs(ev.data, this.model.stateAt(i));
    const plain = r.runs.map((x) => x.text).join("");
    renderRuns(txt, r.runs, this.search ? this.search.marks(i, plain) : []);
    if (ev.type === "step") this.stepDuration(row, i, ev);
  }

  stepDuration(row, i, ev) {
    const end = this.model.stepEnd(i);
    if (!end) return;
    const stop = end.running ? Date.now() : Date.parse(end.timestamp);
    const dur = document.createElement("span");
    dur.className = "dur";
    dur.textContent = duration(stop - Date.parse(ev.timestamp)) + (end.running ? " …" : "");
    row.append(dur);
  }

  // Rows currently in the DOM, for tests: [index, text] in order.
  visibleRows() {
    return [...this.rows.children].map((r) => [Number(r.dataset.index), r.querySelector(".txt").textContent]);
  }
}
