// What the TypeScript suites share: the platform's coordinates, given by the harness that runs
// them (tests/clients, a Rust test that starts every service as a process), and its control
// port, which makes users and restarts the gateway.

export const url = process.env.EASEL_URL;
export const envoyUrl = process.env.EASEL_TEST_ENVOY_URL;
const control = process.env.EASEL_TEST_CONTROL;

/** Skips a suite run without the harness (a developer running `node --test` alone). */
export const skip = control ? false : "needs the platform of tests/clients (EASEL_TEST_CONTROL)";

async function post(path, body) {
  const response = await fetch(control + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`control ${path}: HTTP ${response.status}`);
  return response.json();
}

/** A fresh user of `tier` (free, pro, enterprise) with an API key. */
export function newUser(tier = "pro") {
  return post("/users", { tier });
}

/** Kills the gateway with SIGKILL and starts it again on the same port. */
export function restartGateway() {
  return post("/gateway/restart", {});
}

/** A PNG's [width, height]. */
export function pngSize(bytes) {
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (!signature.every((b, i) => bytes[i] === b)) throw new Error("not a PNG");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return [view.getUint32(16), view.getUint32(20)];
}
