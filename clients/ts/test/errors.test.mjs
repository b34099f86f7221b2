// The error mapping without a server: google.rpc details as the server encodes them, decoded
// into the error classes.

import assert from "node:assert/strict";
import { test } from "node:test";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

import {
  DEFAULT_RETRY,
  InvalidArgument,
  PermissionDenied,
  QuotaExhausted,
  RateLimited,
  Unavailable,
  retryDelay,
  toEaselError,
} from "../dist/index.js";

function errorInfo(reason, metadata) {
  const writer = new BinaryWriter().uint32((1 << 3) | 2).string(reason).uint32((2 << 3) | 2).string("easel");
  for (const [key, value] of Object.entries(metadata)) {
    const entry = new BinaryWriter().uint32((1 << 3) | 2).string(key).uint32((2 << 3) | 2).string(value).finish();
    writer.uint32((3 << 3) | 2).bytes(entry);
  }
  return { type: "google.rpc.ErrorInfo", value: writer.finish() };
}

function badRequest(violations) {
  const writer = new BinaryWriter();
  for (const [field, description] of violations) {
    const entry = new BinaryWriter().uint32((1 << 3) | 2).string(field).uint32((2 << 3) | 2).string(description).finish();
    writer.uint32((1 << 3) | 2).bytes(entry);
  }
  return { type: "google.rpc.BadRequest", value: writer.finish() };
}

function retryInfo(seconds, nanos) {
  const duration = new BinaryWriter().uint32((1 << 3) | 0).int64(seconds).uint32((2 << 3) | 0).int32(nanos).finish();
  return { type: "google.rpc.RetryInfo", value: new BinaryWriter().uint32((1 << 3) | 2).bytes(duration).finish() };
}

test("field violations, reasons, metadata and retry delays are decoded", () => {
  const invalid = toEaselError(new ConnectError("bad", Code.InvalidArgument, undefined, [
    badRequest([["spec.text_to_image.width", "must be a multiple of 8"], ["spec.text_to_image.steps", "too many"]]),
  ]));
  assert.ok(invalid instanceof InvalidArgument);
  assert.deepEqual(invalid.fields, {
    "spec.text_to_image.width": "must be a multiple of 8",
    "spec.text_to_image.steps": "too many",
  });

  const limited = toEaselError(new ConnectError("slow down", Code.ResourceExhausted, undefined, [
    errorInfo("RATE_LIMITED", { limit: "30" }),
    retryInfo(2, 500000000),
  ]));
  assert.ok(limited instanceof RateLimited);
  assert.equal(limited.reason, "RATE_LIMITED");
  assert.deepEqual(limited.metadata, { limit: "30" });
  assert.equal(limited.retryAfterMs, 2500);
  assert.equal(retryDelay(DEFAULT_RETRY, 1, limited), 2500);

  const quota = toEaselError(new ConnectError("no more", Code.ResourceExhausted, undefined, [errorInfo("QUOTA_EXHAUSTED", {})]));
  assert.ok(quota instanceof QuotaExhausted);
  assert.equal(retryDelay(DEFAULT_RETRY, 1, quota), undefined, "no delay given: not retried");

  const denied = toEaselError(new ConnectError("no", Code.PermissionDenied, undefined, [
    errorInfo("MISSING_SCOPE", { required_scope: "jobs:write" }),
  ]));
  assert.ok(denied instanceof PermissionDenied);
  assert.equal(denied.metadata.required_scope, "jobs:write");
});

test("UNAVAILABLE backs off within the policy and stops after maxAttempts", () => {
  const down = toEaselError(new ConnectError("down", Code.Unavailable));
  assert.ok(down instanceof Unavailable);
  const policy = { ...DEFAULT_RETRY, maxAttempts: 3, initialBackoffMs: 1000 };
  const first = retryDelay(policy, 1, down);
  assert.ok(first >= 500 && first <= 1000, String(first));
  assert.equal(retryDelay(policy, 3, down), undefined);
});
