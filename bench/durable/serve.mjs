// The Durable Streams reference server for bench/durable.py: in memory, or with its
// file-backed store when a data directory is given.
//   node serve.mjs PORT [DATA_DIR]
import { DurableStreamTestServer } from "@durable-streams/server";

const [port, dataDir] = process.argv.slice(2);
const server = new DurableStreamTestServer({
  port: Number(port),
  host: "127.0.0.1",
  dataDir: dataDir || undefined,
  longPollTimeout: 20_000,
});
const url = await server.start();
console.log(`listening on ${url}${dataDir ? ` (file-backed: ${dataDir})` : " (in memory)"}`);
const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
