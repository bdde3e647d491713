// Runs the Durable Streams conformance suite (@durable-streams/server-conformance-tests,
// pinned in package-lock.json) against CONFORMANCE_TEST_URL. Its own CLI hands vitest a
// file that vitest's default include and node_modules exclude both filter out (in npm's
// hoisted layout), so the suite's runner is named here instead. Used by
// tests/server/test_ds_conformance.py.
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const suite = resolve(here, "../../../node_modules/@durable-streams/server-conformance-tests");

export default {
  test: {
    root: suite,
    dir: suite,
    include: ["dist/test-runner.js"],
    exclude: [],
    reporters: ["default"],
    watch: false,
    // A few cases sleep 1.5 s against a 2 s TTL: on a loaded machine (the whole test
    // suite on two cores) a request can land after the window. Such a case gets one
    // more try; a real failure fails twice and is reported.
    retry: 1,
  },
};
