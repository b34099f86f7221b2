// The TypeScript client in Node against the real platform, over gRPC (HTTP/2) and gRPC-web.

import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  createEaselClient,
  eventStatus,
  InvalidArgument,
  JobStatus,
  NotFound,
  FailedPrecondition,
  RateLimited,
  ResourceExhausted,
  Unauthenticated,
  DeadlineExceeded,
  JobFailed,
} from "../dist/index.js";
import { newUser, pngSize, restartGateway, skip, url } from "./platform.mjs";

// Simulated sampling steps take 50 ms each (the harness's simulator flag).
const QUICK = 2;
const SLOW = 60;

function contiguous(seqs) {
  return seqs.every((seq, index) => seq === seqs[0] + BigInt(index));
}

for (const transport of ["grpc", "grpc-web"]) {
  describe(`over ${transport}`, { skip }, () => {
    const client = async (tier = "pro") => createEaselClient({ baseUrl: url, apiKey: (await newUser(tier)).api_key, transport });

    test("generate makes a PNG with the job's size and sha256", async () => {
      const easel = await client();
      const { job, images } = await easel.generate("a lighthouse at dusk", { width: 256, height: 192, seed: 7, steps: QUICK });
      assert.equal(job.status, JobStatus.SUCCEEDED);
      assert.equal(job.metadata?.seed, 7n);
      assert.equal(images.length, 1);
      assert.deepEqual(pngSize(images[0]), [256, 192]);
      const [output] = job.outputs;
      assert.equal(output.sizeBytes, BigInt(images[0].length));
      assert.equal(output.sha256, createHash("sha256").update(images[0]).digest("hex"));
      const listed = [];
      for await (const listedJob of easel.list({ pageSize: 1 })) listed.push(listedJob.id);
      assert.deepEqual(listed, [job.id]);
    });

    test("a raw workflow with an override, submitted twice with one idempotency key", async () => {
      const easel = await client();
      const graph = {
        1: { class_type: "EmptyImage", inputs: { width: 64, height: 64, batch_size: 1, color: 3355443 } },
        2: { class_type: "SaveImage", inputs: { images: ["1", 0], filename_prefix: "ts" } },
      };
      const idempotencyKey = `ts-test-${transport}-${Date.now()}-${Math.random()}`;
      const first = await easel.submitWorkflow(graph, { overrides: [["1", "height", 96]], idempotencyKey });
      const again = await easel.submitWorkflow(graph, { overrides: [["1", "height", 96]], idempotencyKey });
      assert.equal(again.id, first.id);
      const job = await easel.wait(first.id);
      assert.equal(job.status, JobStatus.SUCCEEDED);
      assert.deepEqual(pngSize(await easel.download(job.outputs[0], job.id)), [64, 96]);
    });

    test("watch resumes after the gateway restarts and yields every seq once", async () => {
      const easel = await client();
      const job = await easel.submit("a slow sunset", { width: 64, height: 64, steps: SLOW });
      const watch = easel.watch(job.id);
      const seqs = [];
      let restarted = false;
      let last;
      for await (const event of watch) {
        seqs.push(event.seq);
        last = event;
        if (!restarted && event.kind.case === "progress") {
          await restartGateway();
          restarted = true;
        }
      }
      assert.ok(restarted, "the job never reported progress");
      assert.ok(watch.reconnects >= 1, "the stream was never dropped");
      assert.ok(contiguous(seqs), `seqs missing or repeated: ${seqs}`);
      assert.equal(eventStatus(last), JobStatus.SUCCEEDED);
      assert.equal((await easel.get(job.id)).seq, seqs.at(-1));
    });

    test("errors: 401, another user's job, field violations, cancel twice, timeouts", async () => {
      const stranger = createEaselClient({ baseUrl: url, apiKey: "easel_nope_" + "x".repeat(40), transport });
      await assert.rejects(stranger.get("job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b"), Unauthenticated);

      const easel = await client();
      const job = await easel.submit("mine", { width: 64, height: 64, steps: SLOW });
      const other = await client();
      await assert.rejects(other.get(job.id), NotFound);
      await assert.rejects(other.cancel(job.id), NotFound);

      const invalid = await easel.submit("a cat", { width: 100 }).catch((error) => error);
      assert.ok(invalid instanceof InvalidArgument, String(invalid));
      assert.deepEqual(Object.keys(invalid.fields), ["spec.text_to_image.width"]);

      await assert.rejects(easel.wait(job.id, { timeoutMs: 300 }), DeadlineExceeded);
      await easel.cancel(job.id);
      const cancelled = await easel.wait(job.id);
      assert.equal(cancelled.status, JobStatus.CANCELLED);
      await assert.rejects(easel.cancel(job.id), FailedPrecondition);
      assert.match(new JobFailed(cancelled).message, /CANCELLED/);
    });

    test("over the rate limit: RateLimited with retryAfterMs, and retries honour it", async () => {
      // The harness gives the free tier 30 requests a minute with a burst of 4.
      const key = (await newUser("free")).api_key;
      const impatient = createEaselClient({ baseUrl: url, apiKey: key, transport, retry: { maxAttempts: 1 } });
      let limited;
      for (let i = 0; i < 20 && !limited; i++) {
        limited = await impatient.get("job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b").then(
          () => undefined,
          (error) => (error instanceof NotFound ? undefined : error),
        );
      }
      assert.ok(limited instanceof RateLimited, String(limited));
      assert.ok(limited instanceof ResourceExhausted);
      assert.equal(limited.reason, "RATE_LIMITED");
      assert.ok(limited.retryAfterMs > 0 && limited.retryAfterMs <= 60000, String(limited.retryAfterMs));

      const patient = createEaselClient({ baseUrl: url, apiKey: key, transport });
      const waits = [];
      const sleep = patient.sleep;
      patient.sleep = (ms, signal) => {
        waits.push(ms);
        return sleep(ms, signal);
      };
      // The bucket is empty: within three quick calls one is limited, waits and succeeds.
      for (let i = 0; i < 3; i++) await patient.models();
      assert.ok(waits.length > 0, "a call was limited and retried");
    });
  });
}

describe("one client, many watches", { skip }, () => {
  test("20 jobs followed at once over gRPC, each seen to its end", async () => {
    const easel = createEaselClient({ baseUrl: url, apiKey: (await newUser("enterprise")).api_key, transport: "grpc" });
    const follow = async (n) => {
      const job = await easel.submit(`crowd ${n}`, { width: 64, height: 64, steps: 1 });
      const seqs = [];
      let status;
      for await (const event of easel.watch(job.id)) {
        seqs.push(event.seq);
        status = eventStatus(event) ?? status;
      }
      return { id: job.id, seqs, status };
    };
    const results = await Promise.all(Array.from({ length: 20 }, (_, n) => follow(n)));
    assert.equal(new Set(results.map((r) => r.id)).size, 20);
    for (const result of results) {
      assert.equal(result.status, JobStatus.SUCCEEDED, result.id);
      assert.ok(contiguous(result.seqs), `${result.id}: ${result.seqs}`);
    }
  });
});
