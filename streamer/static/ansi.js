// ANSI/VT rendering of one log row: SGR colours and attributes, plus the few cursor
// controls that progress bars use (\r, \b, ESC[K, ESC[G), applied the way a terminal
// would so that "10%\r20%\r30%" shows as "30%".
//
// A style state is a frozen object and is never mutated: rows share states by
// reference, and "same reference" is a cheap "same style" test when grouping runs.

export const DEFAULT = Object.freeze({
  fg: null, bg: null, bold: false, dim: false, italic: false,
  underline: false, inverse: false, strike: false,
});

const MAX_ROW_CHARS = 20000; // a 1 MiB line would freeze layout; the raw log has it all
const SGR = /\x1b\[([0-9;:]*)m/g;
// CSI, OSC (hyperlinks, titles), two/three-byte escapes, or one control character.
const TOKEN = /\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()][0-9A-Za-z]|\x1b[@-_]?|[\x00-\x08\x0a-\x1f\x7f]/g;
const PLAIN_ONLY = /[\x00-\x08\x0a-\x1f\x7f]/;
const SGR_ONLY_CONTROLS = /[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]/;
const NON_SGR_ESCAPE = /\x1b(?!\[[0-9;:]*m)/;
const NEWLINE_MARK = "\u21b5"; // shows where an event held more than one line

// xterm's 256-colour table above the 16 themable colours: a 6x6x6 cube, then greys.
const LEVELS = [0, 95, 135, 175, 215, 255];
export function color256(n) {
  if (n < 232) {
    const c = n - 16;
    return `rgb(${LEVELS[Math.floor(c / 36)]}, ${LEVELS[Math.floor(c / 6) % 6]}, ${LEVELS[c % 6]})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g}, ${g}, ${g})`;
}

const byte = (v) => Math.max(0, Math.min(255, Number(v) || 0));

// Extended colour after 38/48: ["5", n] or ["2", r, g, b]. Returns [colour, consumed].
function extended(args) {
  if (args[0] === "5" && args.length >= 2) return [byte(args[1]), 2];
  if (args[0] === "2" && args.length >= 4) {
    return [`rgb(${byte(args[1])}, ${byte(args[2])}, ${byte(args[3])})`, 4];
  }
  return [undefined, args.length];
}

// Apply one SGR parameter list. `reset` says a full reset happened: everything after
// it is independent of the state before, which lets a mid-log view find its colours
// by scanning back only to the last reset.
export function applySgr(state, raw) {
  const params = raw === "" ? ["0"] : raw.split(";");
  let s = null; // copy on first write
  let reset = false;
  const w = () => s || (s = { ...state });
  for (let i = 0; i < params.length; i++) {
    const part = params[i];
    if (part.includes(":")) {
      // ITU form: 38:5:n, 38:2:r:g:b or 38:2:cs:r:g:b; 4:0 / 4:n for underline styles.
      const sub = part.split(":");
      const code = Number(sub[0]);
      if (code === 38 || code === 48) {
        let args = sub.slice(1);
        if (args[0] === "2" && args.length >= 5) args = ["2", ...args.slice(-3)];
        const [col] = extended(args);
        if (col !== undefined) w()[code === 38 ? "fg" : "bg"] = col;
      } else if (code === 4) w().underline = sub[1] !== "0";
      continue;
    }
    const n = part === "" ? 0 : Number(part);
    if (n === 0) { s = { ...DEFAULT }; reset = true; }
    else if (n === 1) w().bold = true;
    else if (n === 2) w().dim = true;
    else if (n === 3) w().italic = true;
    else if (n === 4 || n === 21) w().underline = true;
    else if (n === 7) w().inverse = true;
    else if (n === 9) w().strike = true;
    else if (n === 22) { w().bold = false; s.dim = false; }
    else if (n === 23) w().italic = false;
    else if (n === 24) w().underline = false;
    else if (n === 27) w().inverse = false;
    else if (n === 29) w().strike = false;
    else if (n >= 30 && n <= 37) w().fg = n - 30;
    else if (n === 39) w().fg = null;
    else if (n >= 40 && n <= 47) w().bg = n - 40;
    else if (n === 49) w().bg = null;
    else if (n >= 90 && n <= 97) w().fg = n - 90 + 8;
    else if (n >= 100 && n <= 107) w().bg = n - 100 + 8;
    else if (n === 38 || n === 48) {
      const [col, used] = extended(params.slice(i + 1));
      if (col !== undefined) w()[n === 38 ? "fg" : "bg"] = col;
      i += used;
    }
  }
  if (!s) return { state, reset };
  // Keep the shared frozen DEFAULT when a change lands back on it.
  const same = Object.keys(DEFAULT).every((k) => s[k] === DEFAULT[k]);
  return { state: same ? DEFAULT : Object.freeze(s), reset };
}

// The style after `text`, without rendering: what the model runs over whole chunks.
export function advance(state, text) {
  let reset = false;
  if (!text || !text.includes("\x1b")) return { state, reset };
  for (const m of text.matchAll(SGR)) {
    const r = applySgr(state, m[1]);
    state = r.state;
    reset ||= r.reset;
  }
  return { state, reset };
}

// One event's text as styled runs, terminal style: a cell grid per line, where \r
// moves back to column 0 and later text overwrites (it does not erase) what is there.
export function runs(text, state) {
  let body = text || "";
  if (body.endsWith("\r\n")) body = body.slice(0, -2);
  else if (body.endsWith("\n")) body = body.slice(0, -1);
  if (body.length > MAX_ROW_CHARS) body = body.slice(0, MAX_ROW_CHARS);
  if (!PLAIN_ONLY.test(body) && !body.includes("\x1b")) {
    return { runs: body ? [{ text: body, state }] : [], state };
  }
  const out = [];
  let chars = [], styles = [], col = 0;
  const flushLine = (last) => {
    for (let i = 0; i < chars.length; i++) {
      const st = styles[i], prev = out[out.length - 1];
      if (prev && prev.state === st) prev.text += chars[i];
      else out.push({ text: chars[i], state: st });
    }
    if (!last) out.push({ text: NEWLINE_MARK, state: DEFAULT, mark: true });
    chars = []; styles = []; col = 0;
  };
  const write = (chunk) => {
    for (const ch of chunk) {
      while (chars.length < col) { chars.push(" "); styles.push(DEFAULT); }
      chars[col] = ch; styles[col] = state; col++;
    }
  };
  let last = 0;
  for (const m of body.matchAll(TOKEN)) {
    if (m.index > last) write(body.slice(last, m.index));
    last = m.index + m[0].length;
    const tok = m[0];
    if (tok === "\r") col = 0;
    else if (tok === "\n") flushLine(false);
    else if (tok === "\b") col = Math.max(0, col - 1);
    else if (m[2] === "m") state = applySgr(state, m[1]).state;
    else if (m[2] === "K") {
      const mode = m[1] || "0";
      if (mode === "0") { chars.length = Math.min(chars.length, col); styles.length = chars.length; }
      else if (mode === "1") for (let i = 0; i < Math.min(col + 1, chars.length); i++) chars[i] = " ";
      else if (mode === "2") { chars = []; styles = []; }
    } else if (m[2] === "G") col = Math.max(0, (Number(m[1]) || 1) - 1);
    else if (m[2] === "C") col += Number(m[1]) || 1;
    else if (m[2] === "D") col = Math.max(0, col - (Number(m[1]) || 1));
    // Anything else (titles, hyperlinks, cursor up/down, modes) has no place in a row.
  }
  if (last < body.length) write(body.slice(last));
  flushLine(true);
  return { runs: out, state };
}

// The text a row shows, for search. Same result as joining runs(), faster when it can.
export function plainText(text) {
  let body = text || "";
  if (body.endsWith("\r\n")) body = body.slice(0, -2);
  else if (body.endsWith("\n")) body = body.slice(0, -1);
  if (body.length > MAX_ROW_CHARS) body = body.slice(0, MAX_ROW_CHARS);
  if (!PLAIN_ONLY.test(body)) {
    if (!body.includes("\x1b")) return body;
    if (!SGR_ONLY_CONTROLS.test(body) && !NON_SGR_ESCAPE.test(body)) return body.replace(SGR, "");
  }
  return runs(body, DEFAULT).runs.map((r) => r.text).join("");
}

// Classes for the 16 themable colours and the attributes; CSSOM for the other 240
// and for 24-bit colours (a strict CSP allows element.style, not style attributes).
function styleSpan(span, st) {
  let fg = st.fg, bg = st.bg;
  const cls = [];
  if (st.inverse) {
    [fg, bg] = [bg, fg];
    if (fg === null) cls.push("inv-fg");
    if (bg === null) cls.push("inv-bg");
  }
  if (typeof fg === "number") {
    if (fg < 16) cls.push(`fg${fg}`); else span.style.color = color256(fg);
  } else if (typeof fg === "string") span.style.color = fg;
  if (typeof bg === "number") {
    if (bg < 16) cls.push(`bg${bg}`); else span.style.backgroundColor = color256(bg);
  } else if (typeof bg === "string") span.style.backgroundColor = bg;
  if (st.bold) cls.push("sb");
  if (st.dim) cls.push("sd");
  if (st.italic) cls.push("si");
  if (st.underline) cls.push("su");
  if (st.strike) cls.push("ss");
  if (cls.length) span.className = cls.join(" ");
}

// Append the runs to `parent`, wrapping search matches ([start, end, current]) in <mark>.
export function renderRuns(parent, list, marks = []) {
  let pos = 0, m = 0;
  for (const run of list) {
    let text = run.text;
    while (text) {
      while (m < marks.length && marks[m][1] <= pos) m++;
      const mark = marks[m];
      let take = text.length, inMark = false;
      if (mark && mark[0] <= pos) { inMark = true; take = Math.min(take, mark[1] - pos); }
      else if (mark && mark[0] < pos + take) take = mark[0] - pos;
      const piece = text.slice(0, take);
      let node;
      if (run.mark) { node = document.createElement("span"); node.className = "nl"; node.textContent = piece; }
      else if (run.state === DEFAULT) node = document.createTextNode(piece);
      else { node = document.createElement("span"); styleSpan(node, run.state); node.textContent = piece; }
      if (inMark) {
        const el = document.createElement("mark");
        if (mark[2]) el.className = "current";
        el.append(node);
        node = el;
      }
      parent.append(node);
      pos += take;
      text = text.slice(take);
    }
  }
}

// An event's data as display lines: split at newlines, the trailing empty piece dropped.
export function splitLines(data) {
  if (!data) return [""];
  const pieces = data.split("\n");
  if (pieces.length > 1 && pieces[pieces.length - 1] === "") pieces.pop();
  return pieces;
}
