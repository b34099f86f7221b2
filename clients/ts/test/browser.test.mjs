// The TypeScript client in a real Chromium (playwright-core, the Debian chromium): a page on
// its own origin loads the compiled ESM client through an import map and runs the whole path —
// submit, watch, wait, download — over gRPC-web, cross-origin (so the browser runs the CORS
// preflight), once straight to the gateway and once through Envoy.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { envoyUrl, newUser, skip, url } from "./platform.mjs";

// The origin the harness lets through CORS (EASEL_CORS_ORIGINS); the page is served by
// Playwright itself, so nothing listens on it.
const ORIGIN = "http://app.easel.test";
const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "dist");
const PACKAGES = ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-web"];

// require() honours NODE_PATH, where scripts/setup.sh installs playwright-core.
const require = createRequire(import.meta.url);

// Where scripts/setup.sh installed the packages (the first NODE_PATH entry).
const NODE_MODULES = (process.env.NODE_PATH ?? "").split(path.delimiter)[0];

/** Each package's directory. */
function packageDir(name) {
  return path.join(NODE_MODULES, name);
}

/** An import map of the packages' ESM entry points, from their package.json `exports`. */
async function importMap() {
  const imports = {};
  for (const name of PACKAGES) {
    const manifest = JSON.parse(await readFile(path.join(packageDir(name), "package.json"), "utf8"));
    for (const [subpath, target] of Object.entries(manifest.exports)) {
      const file = typeof target === "string" ? target : (target.import ?? target.default);
      if (typeof file !== "string" || subpath.includes("*")) continue;
      imports[name + subpath.slice(1)] = `/modules/${name}/${file.replace(/^\.\//, "")}`;
    }
  }
  return { imports };
}

async function serve(route) {
  const { pathname } = new URL(route.request().url());
  let file;
  if (pathname === "/") {
    const body = `<!doctype html><title>easel</title><script type="importmap">${JSON.stringify(await importMap())}</script><p>easel client test page</p>`;
    return route.fulfill({ status: 200, contentType: "text/html", body });
  }
  if (pathname.startsWith("/client/")) file = path.join(DIST, pathname.slice("/client/".length));
  const module = PACKAGES.find((name) => pathname.startsWith(`/modules/${name}/`));
  if (module) file = path.join(packageDir(module), pathname.slice(`/modules/${module}/`.length));
  if (!file) return route.fulfill({ status: 404, body: "not here" });
  try {
    return route.fulfill({ status: 200, contentType: "text/javascript", body: await readFile(file) });
  } catch {
    return route.fulfill({ status: 404, body: "not here" });
  }
}

/** Runs generate + watch in the page against `baseUrl` and returns what it saw. */
async function runInChromium(baseUrl, apiKey) {
  const { chromium } = require("playwright-core");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
  try {
    const page = await browser.newPage();
    await page.route(`${ORIGIN}/**`, serve);
    await page.goto(`${ORIGIN}/`);
    return await page.evaluate(async ({ baseUrl, apiKey }) => {
      const easel = await import("/client/index.js");
      const client = easel.createEaselClient({ baseUrl, apiKey, transport: "grpc-web" });
      const job = await client.submit("a browser-made sunset", { width: 128, height: 64, steps: 2 });
      const seqs = [];
      let last;
      for await (const event of client.watch(job.id)) {
        seqs.push(Number(event.seq));
        last = event;
      }
      const done = await client.get(job.id);
      const image = await client.download(done.outputs[0], done.id);
      const view = new DataView(image.buffer);
      let missing;
      try {
        await client.get("job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b");
      } catch (error) {
        missing = { name: error.constructor.name, isNotFound: error instanceof easel.NotFound };
      }
      return {
        seqs,
        terminal: easel.JobStatus[easel.eventStatus(last)],
        status: easel.JobStatus[done.status],
        size: [view.getUint32(16), view.getUint32(20)],
        bytes: image.length,
        missing,
      };
    }, { baseUrl, apiKey });
  } finally {
    await browser.close();
  }
}

describe("in Chromium over gRPC-web", { skip }, () => {
  for (const [name, target] of [["to the gateway", () => url], ["through Envoy", () => envoyUrl]]) {
    test(name, async () => {
      assert.ok(target(), "no URL for this route");
      const { api_key: apiKey } = await newUser();
      const seen = await runInChromium(target(), apiKey);
      assert.equal(seen.status, "SUCCEEDED");
      assert.equal(seen.terminal, "SUCCEEDED");
      assert.deepEqual(seen.size, [128, 64]);
      assert.ok(seen.bytes > 0);
      assert.ok(seen.seqs.every((seq, i) => seq === seen.seqs[0] + i), String(seen.seqs));
      assert.deepEqual(seen.missing, { name: "NotFound", isNotFound: true });
    });
  }
});
