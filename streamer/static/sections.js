// Sections on the page: which are folded, which rows they hide, and the list that
// jumps to each. The sections themselves are the server's (the model keeps them);
// this only decides what the reader sees: a section starts folded when the server
// says it is collapsed, opens by itself when it holds a failure, and after that
// follows the reader's clicks and keys.

import { duration, el } from "./util.js";

export class Folds {
  constructor(model) {
    this.model = model;
    this.user = new Map(); // id -> folded, as the reader set it
    this.failing = new Set(); // ids that hold a failure: open unless the reader folds them
    this.gen = 0;
    this.index = null;
    this.onchange = () => {};
  }

  changed() {
    this.gen++;
    this.index = null;
    this.onchange();
  }

  isFolded(id) {
    if (this.user.has(id)) return this.user.get(id);
    if (this.failing.has(id)) return false;
    return !!this.model.sections.get(id)?.collapsed;
  }

  toggle(id) { this.set(id, !this.isFolded(id)); }

  set(id, folded) {
    this.user.set(id, folded);
    this.changed();
  }

  // Open every section around the given (index, line) places: where failures are.
  openAround(places) {
    let changed = false;
    for (const s of this.model.sections.values()) {
      if (this.failing.has(s.id)) continue;
      if (places.some(([i, line]) => contains(s, i, line))) { this.failing.add(s.id); changed = true; }
    }
    if (changed) this.changed();
  }

  // Open what hides (index, line): the reader asked to see it (a search, a permalink).
  reveal(i, line) {
    let changed = false;
    for (const s of this.model.sections.values()) {
      if (this.isFolded(s.id) && contains(s, i, line) && !(s.start_index === i && s.start_line === line)) {
        this.user.set(s.id, false);
        changed = true;
      }
    }
    if (changed) this.changed();
  }

  // Lookups, rebuilt once per change: headers by (index, line), folded ranges.
  lookup() {
    if (this.index) return this.index;
    const headers = new Map(), ends = new Set(), folded = [];
    for (const s of this.model.sections.values()) {
      const key = `${s.start_index}:${s.start_line}`;
      if (!headers.has(key)) headers.set(key, s);
      if (s.end_index != null) ends.add(`${s.end_index}:${s.end_line}`);
      if (this.isFolded(s.id)) folded.push(s);
    }
    this.index = { headers, ends, folded };
    return this.index;
  }

  headerAt(i, line) { return this.lookup().headers.get(`${i}:${line}`) ?? null; }

  endAt(i, line) { return this.lookup().ends.has(`${i}:${line}`); }

  // Is the row (event i, raw line) inside a folded section, below its header?
  hidden(i, line) {
    for (const s of this.lookup().folded) {
      if (line != null) {
        if (line > s.start_line && (s.end_line == null || line <= s.end_line)) return true;
      } else if (i > s.start_index && (s.end_index == null || i <= s.end_index)) return true;
    }
    return false;
  }

  // Events in [start, end) that folds hide: a chunk's height before it is loaded.
  hiddenEvents(start, end) {
    const spans = this.lookup().folded
      .map((s) => [Math.max(start, s.start_index + 1), Math.min(end, (s.end_index ?? Infinity) + 1)])
      .filter(([a, b]) => b > a)
      .sort((x, y) => x[0] - y[0]);
    let hidden = 0, reach = start;
    for (const [a, b] of spans) {
      const from = Math.max(a, reach);
      if (b > from) { hidden += b - from; reach = b; }
    }
    return hidden;
  }
}

function contains(s, i, line) {
  if (line != null && s.start_line != null) {
    return line >= s.start_line && (s.end_line == null || line <= s.end_line);
  }
  return i >= s.start_index && (s.end_index == null || i <= s.end_index);
}

// The list of sections beside the log: each jumps to its header, shows its duration.
export function renderSectionList(list, model, folds, onjump) {
  const sections = [...model.sections.values()].sort((a, b) => a.id - b.id);
  list.hidden = sections.length === 0;
  const items = sections.map((s) => {
    const took = s.duration_seconds != null ? duration(s.duration_seconds * 1000) : "running";
    const button = el("button", { type: "button", className: "jump-to", dataset: { section: String(s.id) } },
      el("span", { className: "title", textContent: s.title || s.name }),
      el("span", { className: "took", textContent: took }));
    button.style.setProperty("--depth", String(s.depth));
    if (folds.failing.has(s.id)) button.classList.add("failing");
    button.addEventListener("click", () => onjump(s));
    return el("li", {}, button);
  });
  list.querySelector("ol").replaceChildren(...items);
}
