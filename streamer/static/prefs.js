// What the reader chose, remembered per browser (localStorage): the colour theme,
// timestamps and line wrap. Never anything secret: the key stays in sessionStorage.

const PREFIX = "streamer.pref.";
const THEMES = ["auto", "light", "dark"];

export function pref(name, fallback) {
  try {
    return localStorage.getItem(PREFIX + name) ?? fallback;
  } catch {
    return fallback; // storage disabled: defaults every time
  }
}

export function setPref(name, value) {
  try { localStorage.setItem(PREFIX + name, value); } catch { /* not remembered */ }
}

// The theme in force: the reader's choice, else the system's.
export function applyTheme() {
  const chosen = pref("theme", "auto");
  const dark = chosen === "dark" || (chosen === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  const button = document.getElementById("theme");
  if (button) {
    button.textContent = { auto: "◐ Auto", light: "☀ Light", dark: "☾ Dark" }[chosen];
    button.setAttribute("aria-label", `Colour theme: ${chosen} (change)`);
  }
}

export function wireTheme() {
  applyTheme();
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  document.getElementById("theme").addEventListener("click", () => {
    const next = THEMES[(THEMES.indexOf(pref("theme", "auto")) + 1) % THEMES.length];
    setPref("theme", next);
    applyTheme();
  });
}
