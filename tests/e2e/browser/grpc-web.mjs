// Drives a real Chromium through one gRPC-web call, the way a web front end makes it: a page
// served from its own origin calls the gateway cross-origin with fetch(), so CORS, the
// preflight and the grpc-web framing are all exercised by the browser itself.
//
// Usage: node grpc-web.mjs <page-origin-url> <gateway-url> <grpc-path> <request-base64> <api-key>
// Prints one JSON line: {"status", "headers", "bodyBase64"} or {"error"}.
// require() (unlike import) honours NODE_PATH, where scripts/setup.sh installs playwright-core.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const [pageUrl, gatewayUrl, path, requestBase64, apiKey] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  const result = await page.evaluate(async ({ gatewayUrl, path, requestBase64, apiKey }) => {
    const message = Uint8Array.from(atob(requestBase64), (c) => c.charCodeAt(0));
    // gRPC-web frame: flag byte 0 (data), 4-byte big-endian length, message.
    const frame = new Uint8Array(5 + message.length);
    new DataView(frame.buffer).setUint32(1, message.length);
    frame.set(message, 5);
    try {
      const response = await fetch(gatewayUrl + path, {
        method: 'POST',
        headers: {
          'content-type': 'application/grpc-web+proto',
          'x-grpc-web': '1',
          'x-api-key': apiKey,
        },
        body: frame,
      });
      const body = new Uint8Array(await response.arrayBuffer());
      let binary = '';
      for (const byte of body) binary += String.fromCharCode(byte);
      const headers = {};
      response.headers.forEach((value, key) => { headers[key] = value; });
      return { status: response.status, headers, bodyBase64: btoa(binary) };
    } catch (error) {
      return { error: String(error) };
    }
  }, { gatewayUrl, path, requestBase64, apiKey });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
