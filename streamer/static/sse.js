// Server-Sent Events read with fetch(): the API key travels in the Authorization
// header (EventSource cannot send one, and a key never goes in a URL), and the page
// decides itself where to resume. WHATWG framing: a line ends at CR, LF or CRLF (never
// at U+2028, which JSON leaves raw), a blank line dispatches, ":" starts a comment.

import { getKey } from "./api.js";

const BASE = "api/v1";

export function openStream(path, { headers = {}, signal } = {}) {
  return fetch(`${BASE}${path}`, {
    headers: { Authorization: `Bearer ${getKey() ?? ""}`, Accept: "text/event-stream", ...headers },
    cache: "no-store",
    signal,
  });
}

// The response's messages ({id, event, data}) and comments ({comment}), in order.
export async function* messages(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", event = "", data = [], id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let start = 0;
    for (;;) {
      const cr = buffer.indexOf("\r", start), lf = buffer.indexOf("\n", start);
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      if (end < 0 || (end === cr && end === buffer.length - 1)) break; // a CR may be half a CRLF
      const line = buffer.slice(start, end);
      start = end + (buffer.startsWith("\r\n", end) ? 2 : 1);
      if (line === "") {
        if (data.length) yield { id, event: event || "message", data: data.join("\n") };
        event = ""; data = [];
      } else if (line.startsWith(":")) {
        yield { comment: line.slice(1).trim() };
      } else {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (name === "data") data.push(text);
        else if (name === "event") event = text;
        else if (name === "id" && !text.includes("\0")) id = text;
      }
    }
    buffer = buffer.slice(start);
  }
}

// Capped, jittered backoff: a restarted server is not stampeded by every tab.
export function retryDelay(attempt) {
  return Math.min(5000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
}
