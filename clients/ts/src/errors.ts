// The errors of the easel client: every failed call throws an EaselError subclass carrying the
// gRPC code, the message and the google.rpc details the server sent (ErrorInfo's reason and
// metadata, BadRequest's field violations, RetryInfo's delay).

import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { Job } from "./gen/easel/jobs/v1/jobs_pb.js";
import { JobStatus } from "./gen/easel/jobs/v1/jobs_pb.js";

/** One invalid field of a request. */
export interface FieldViolation {
  /** The field's path in the request, e.g. `spec.text_to_image.width`. */
  field: string;
  /** Why it is invalid. */
  description: string;
}

/** What the server said about a failed call. */
export interface ErrorDetails {
  reason?: string;
  metadata: Record<string, string>;
  fieldViolations: FieldViolation[];
  retryAfterMs?: number;
}

/** A call to easel failed. */
export class EaselError extends Error {
  /** The gRPC status code (Connect's `Code`, numerically gRPC's). */
  readonly code: Code;
  /** The server's message, for people. */
  readonly rawMessage: string;
  /** The machine-readable ErrorInfo reason (`RATE_LIMITED`, `MISSING_SCOPE`, …). */
  readonly reason?: string;
  /** The ErrorInfo metadata (e.g. `required_scope`). */
  readonly metadata: Record<string, string>;
  /** The invalid fields of the request. */
  readonly fieldViolations: FieldViolation[];
  /** Milliseconds the server asked the caller to wait before retrying. */
  readonly retryAfterMs?: number;

  constructor(code: Code, message: string, details: ErrorDetails, options?: { cause?: unknown }) {
    super(`${Code[code] ?? code}: ${message}${details.reason ? ` [${details.reason}]` : ""}`, options);
    this.name = new.target.name;
    this.code = code;
    this.rawMessage = message;
    this.reason = details.reason;
    this.metadata = details.metadata;
    this.fieldViolations = details.fieldViolations;
    this.retryAfterMs = details.retryAfterMs;
  }

  /** The invalid fields as `{path: description}`. */
  get fields(): Record<string, string> {
    return Object.fromEntries(this.fieldViolations.map((v) => [v.field, v.description]));
  }
}

/** The request is invalid; `fields` names what is wrong. */
export class InvalidArgument extends EaselError {}
/** Valid, but not now (e.g. cancelling a finished job). */
export class FailedPrecondition extends EaselError {}
/** No valid credential. */
export class Unauthenticated extends EaselError {}
/** The credential may not do this; a missing scope has reason `MISSING_SCOPE`. */
export class PermissionDenied extends EaselError {}
/** No such job, or it belongs to someone else. */
export class NotFound extends EaselError {}
/** The resource exists already. */
export class AlreadyExists extends EaselError {}
/** A conflict, e.g. the first request with this idempotency key is still in flight. */
export class Aborted extends EaselError {}
/** A limit of the caller was hit. */
export class ResourceExhausted extends EaselError {}
/** Over the request rate of the caller's tier; `retryAfterMs` says when to try again. */
export class RateLimited extends ResourceExhausted {}
/** A quota is used up (jobs per day, concurrent jobs). */
export class QuotaExhausted extends ResourceExhausted {}
/** The platform or a dependency is down, or it sheds load. */
export class Unavailable extends EaselError {}
/** The call did not finish within its deadline. */
export class DeadlineExceeded extends EaselError {}
/** The server failed. */
export class InternalError extends EaselError {}
/** The call was cancelled. */
export class Cancelled extends EaselError {}

/** A job ended without images (FAILED, CANCELLED or EXPIRED); `job.error` says why. */
export class JobFailed extends Error {
  readonly job: Job;
  constructor(job: Job) {
    const detail = job.error ? `: ${job.error.code}: ${job.error.message}` : "";
    super(`job ${job.id} ended ${JobStatus[job.status]}${detail}`);
    this.name = "JobFailed";
    this.job = job;
  }
}

/** An output could not be downloaded, or its bytes do not match the job's size and sha256. */
export class DownloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DownloadError";
  }
}

const BY_CODE: Partial<Record<Code, typeof EaselError>> = {
  [Code.InvalidArgument]: InvalidArgument,
  [Code.OutOfRange]: InvalidArgument,
  [Code.FailedPrecondition]: FailedPrecondition,
  [Code.Unauthenticated]: Unauthenticated,
  [Code.PermissionDenied]: PermissionDenied,
  [Code.NotFound]: NotFound,
  [Code.AlreadyExists]: AlreadyExists,
  [Code.Aborted]: Aborted,
  [Code.ResourceExhausted]: ResourceExhausted,
  [Code.Unavailable]: Unavailable,
  [Code.DeadlineExceeded]: DeadlineExceeded,
  [Code.Internal]: InternalError,
  [Code.Unknown]: InternalError,
  [Code.DataLoss]: InternalError,
  [Code.Canceled]: Cancelled,
};

const BY_REASON: Record<string, typeof EaselError> = {
  RATE_LIMITED: RateLimited,
  QUOTA_EXHAUSTED: QuotaExhausted,
};

/** The EaselError subclass for anything a Connect call threw. */
export function toEaselError(reason: unknown): EaselError {
  if (reason instanceof EaselError) return reason;
  const error = ConnectError.from(reason);
  const details = parseDetails(error);
  let kind = BY_CODE[error.code] ?? EaselError;
  if (error.code === Code.ResourceExhausted && details.reason && BY_REASON[details.reason]) {
    kind = BY_REASON[details.reason];
  }
  return new kind(error.code, error.rawMessage, details, { cause: reason });
}

const ERROR_INFO = "google.rpc.ErrorInfo";
const BAD_REQUEST = "google.rpc.BadRequest";
const RETRY_INFO = "google.rpc.RetryInfo";

// The three google.rpc messages are decoded by hand from the wire format: they are small and
// stable, and the proto/ directory (the generation's input) does not carry googleapis.
function parseDetails(error: ConnectError): ErrorDetails {
  const parsed: ErrorDetails = { metadata: {}, fieldViolations: [] };
  for (const detail of error.details) {
    // Details received from the server carry their type name and bytes.
    if (!("type" in detail) || !(detail.value instanceof Uint8Array)) continue;
    const { type, value } = detail;
    if (type === ERROR_INFO) readErrorInfo(value, parsed);
    else if (type === BAD_REQUEST) readBadRequest(value, parsed);
    else if (type === RETRY_INFO) readRetryInfo(value, parsed);
  }
  return parsed;
}

function fields(bytes: Uint8Array, visit: (field: number, reader: BinaryReader, wire: WireType) => boolean): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (!visit(field, reader, wire)) reader.skip(wire, field);
  }
}

function readErrorInfo(bytes: Uint8Array, into: ErrorDetails): void {
  fields(bytes, (field, reader, wire) => {
    if (wire !== WireType.LengthDelimited) return false;
    if (field === 1) {
      into.reason = reader.string();
      return true;
    }
    if (field === 3) {
      let key = "";
      let value = "";
      fields(reader.bytes(), (entryField, entry) => {
        if (entryField === 1) key = entry.string();
        else if (entryField === 2) value = entry.string();
        else return false;
        return true;
      });
      into.metadata[key] = value;
      return true;
    }
    return false;
  });
}

function readBadRequest(bytes: Uint8Array, into: ErrorDetails): void {
  fields(bytes, (field, reader, wire) => {
    if (field !== 1 || wire !== WireType.LengthDelimited) return false;
    const violation: FieldViolation = { field: "", description: "" };
    fields(reader.bytes(), (inner, entry, innerWire) => {
      if (innerWire !== WireType.LengthDelimited) return false;
      if (inner === 1) violation.field = entry.string();
      else if (inner === 2) violation.description = entry.string();
      else return false;
      return true;
    });
    into.fieldViolations.push(violation);
    return true;
  });
}

function readRetryInfo(bytes: Uint8Array, into: ErrorDetails): void {
  fields(bytes, (field, reader, wire) => {
    if (field !== 1 || wire !== WireType.LengthDelimited) return false;
    let seconds = 0;
    let nanos = 0;
    fields(reader.bytes(), (inner, entry, innerWire) => {
      if (innerWire !== WireType.Varint) return false;
      if (inner === 1) seconds = Number(entry.int64());
      else if (inner === 2) nanos = entry.int32();
      else return false;
      return true;
    });
    into.retryAfterMs = seconds * 1000 + nanos / 1e6;
    return true;
  });
}
