// Entry point: sign-in, then the job list (/) or one job (/?job=ID#L120-L140).
// Each view is its own page load, so back/forward and reload just work and a view
// never has to tear down timers or streams.

import { clearKey, getKey, request, setKey, whenUnauthorized } from "./api.js";
import { showFeedState } from "./feed.js";
import { showList } from "./joblist.js";
import { showJob } from "./jobview.js";
import { showPipeline, wireWatchButton } from "./pipeline.js";
import { wireTheme } from "./prefs.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function showSignin(message = "") {
  for (const id of ["list-view", "job-view", "pipeline-view"]) $(id).hidden = true;
  $("signout").hidden = true;
  $("signin-view").hidden = false;
  const error = $("signin-error");
  error.textContent = message;
  error.hidden = !message;
  $("signin-key").focus();
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("signin-key").value.trim();
  try {
    await request("/jobs?limit=1", { key }); // proves the key before keeping it
  } catch (err) {
    showSignin(err.status === 401 ? "That key was not accepted." : `Could not sign in: ${err.message}`);
    return;
  }
  setKey(key);
  $("signin-key").value = "";
  wireTheme();
route();
});

$("signout").addEventListener("click", () => {
  clearKey();
  location.assign("./");
});

whenUnauthorized(() => {
  clearKey();
  showSignin("Your key is no longer accepted. Sign in again.");
});

function route() {
  if (!getKey()) return showSignin();
  $("signin-view").hidden = true;
  $("signout").hidden = false;
  showFeedState();
  const job = params.get("job"), pipeline = params.get("pipeline");
  if (job) showJob(job);
  else if (pipeline) showPipeline(pipeline.split(",").filter(Boolean));
  else { showList(params); wireWatchButton(); }
}

wireTheme();
route();
