// Runs one Worker bundle under the real workerd through Miniflare (used by testkit::workerd).
//
//   node run.mjs CONFIG.json
//
// CONFIG.json:
//   nodeTools          dir whose node_modules holds miniflare (tools/node)
//   bundleDir          the Worker bundle; becomes Miniflare's modulesRoot
//   main               entry module, relative to bundleDir (e.g. "index.js")
//   port               0 = any free port (the default)
//   compatibilityDate, compatibilityFlags
//   bindings           {NAME: "plain text"}
//   kvNamespaces       ["CONFIG", ...]
//   durableObjects     {BINDING: {className, useSQLite}}
//   persistDir         optional; KV and Durable Object state survive restarts there
//   readyFile          optional; the URL is written there (atomically) once serving
//   watchStdin         default true: stdin closing (the parent died) shuts down
//
// Prints `testkit-workerd-ready <url>` on one line when ready. Shuts down cleanly (disposing
// Miniflare, which stops workerd) on SIGTERM, SIGINT or stdin close.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const configPath = process.argv[2];
if (!configPath) {
  console.error("usage: node run.mjs CONFIG.json");
  process.exit(64);
}
const config = JSON.parse(readFileSync(configPath, "utf8"));

const requireFromTools = createRequire(path.join(config.nodeTools, "package.json"));
const mfModule = await import(pathToFileURL(requireFromTools.resolve("miniflare")).href);
const { Miniflare, Log, LogLevel } = mfModule.Miniflare ? mfModule : mfModule.default;

const options = {
  host: "127.0.0.1",
  port: config.port ?? 0,
  modules: true,
  modulesRoot: config.bundleDir,
  scriptPath: path.join(config.bundleDir, config.main),
  modulesRules: [
    { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
    { type: "CompiledWasm", include: ["**/*.wasm"] },
  ],
  compatibilityDate: config.compatibilityDate,
  compatibilityFlags: config.compatibilityFlags ?? [],
  bindings: config.bindings ?? {},
  kvNamespaces: config.kvNamespaces ?? [],
  durableObjects: config.durableObjects ?? {},
  // No fetch of Request.cf data from the internet.
  cf: false,
  log: new Log(LogLevel.INFO),
};
if (config.persistDir) {
  options.kvPersist = path.join(config.persistDir, "kv");
  options.durableObjectsPersist = path.join(config.persistDir, "do");
}

let mf;
let closing = false;
async function shutdown(code) {
  if (closing) return;
  closing = true;
  try {
    if (mf) await mf.dispose();
  } catch (err) {
    console.error("testkit-workerd: dispose failed:", err);
  }
  process.exit(code);
}
process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
if (config.watchStdin !== false) {
  process.stdin.on("end", () => shutdown(0));
  process.stdin.on("close", () => shutdown(0));
  process.stdin.resume();
}

try {
  mf = new Miniflare(options);
  const url = await mf.ready;
  const href = url.href.replace(/\/$/, "");
  if (config.readyFile) {
    writeFileSync(`${config.readyFile}.tmp`, href);
    renameSync(`${config.readyFile}.tmp`, config.readyFile);
  }
  console.log(`testkit-workerd-ready ${href}`);
} catch (err) {
  console.error("testkit-workerd: failed to start:", err);
  await shutdown(1);
}
