// The hand-written layer over the generated Connect descriptors: submit, follow, wait, download,
// with credentials, retries and resumed watches.

import { create, fromJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { durationFromMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  InputOverrideSchema,
  JobService,
  JobSpecSchema,
  JobStatus,
  SubmitJobRequestSchema,
  TextToImageSchema,
  WorkflowSchema,
  type Job,
  type JobEvent,
  type JobOutput,
  type JobSpec,
  type Sampler,
  type Scheduler,
  type SubmitJobRequest,
} from "./gen/easel/jobs/v1/jobs_pb.js";
import { ModelService, type Model } from "./gen/easel/models/v1/models_pb.js";
import { DeadlineExceeded, DownloadError, EaselError, JobFailed, toEaselError } from "./errors.js";

/** How calls are retried: UNAVAILABLE with exponential backoff and jitter, RESOURCE_EXHAUSTED
 * only when the server says when (a rate limit's RetryInfo). Submits always carry an
 * idempotency key, so a retry never makes a second job. */
export interface RetryPolicy {
  /** Calls made at most, the first included (1 disables retries); for a watch, failed
   * reconnects in a row. Default 8. */
  maxAttempts: number;
  /** Milliseconds before the first retry. Default 100. */
  initialBackoffMs: number;
  /** The longest backoff. Default 5000. */
  maxBackoffMs: number;
  /** Growth of the backoff per attempt. Default 2. */
  multiplier: number;
  /** The longest server-requested delay waited; a longer one is thrown at once. Default 60000. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 8,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
  multiplier: 2,
  maxRetryAfterMs: 60000,
};

/** Milliseconds to wait before retry `attempt` (1-based) after `error`, or undefined. */
export function retryDelay(policy: RetryPolicy, attempt: number, error: EaselError): number | undefined {
  if (attempt >= policy.maxAttempts) return undefined;
  if (error.code === Code.Unavailable) {
    const backoff = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** (attempt - 1));
    return Math.max(error.retryAfterMs ?? 0, (0.5 + Math.random() / 2) * backoff);
  }
  if (error.code === Code.ResourceExhausted && error.retryAfterMs !== undefined) {
    return error.retryAfterMs > policy.maxRetryAfterMs ? undefined : error.retryAfterMs;
  }
  return undefined;
}

export interface EaselClientOptions {
  /** The gateway, e.g. `http://127.0.0.1:8080`; default `$EASEL_URL` in Node, then that. */
  baseUrl?: string;
  /** An API key (sent as `x-api-key`); default `$EASEL_API_KEY` in Node unless a token is given. */
  apiKey?: string;
  /** An access token (`Authorization: Bearer`), e.g. from `ExchangeToken`, for browsers. */
  token?: string;
  /** `grpc-web` (browsers and Node; the default), `grpc` (Node only, HTTP/2) or a Connect
   * transport of your own. */
  transport?: "grpc-web" | "grpc" | Transport;
  /** Milliseconds each unary call may take (default 30000). */
  timeoutMs?: number;
  /** Retry settings (see RetryPolicy). */
  retry?: Partial<RetryPolicy>;
  /** The fetch used by grpc-web and downloads (default: the global one). */
  fetch?: typeof globalThis.fetch;
}

/** A text-to-image request; zero or omitted fields take the server's defaults. */
export interface TextToImageParams {
  negativePrompt?: string;
  width?: number;
  height?: number;
  steps?: number;
  cfgScale?: number;
  sampler?: Sampler;
  scheduler?: Scheduler;
  seed?: bigint | number;
  checkpoint?: string;
  batchSize?: number;
}

/** What every submit also takes. */
export interface SubmitOptions {
  /** Makes retries safe; a random one is used when not given. */
  idempotencyKey?: string;
  /** Give up if the job has not started within this long. */
  startTimeoutMs?: number;
  /** Keep ComfyUI's PNG text chunks (the graph and prompt) in the stored images. */
  keepWorkflowMetadata?: boolean;
}

/** An input override of a raw workflow: `[nodeId, input, value]`. */
export type Override = [nodeId: string, input: string, value: unknown];

export interface WatchOptions {
  /** Resume after this sequence number (0: start with a snapshot). */
  afterSeq?: bigint;
  /** Bounds the whole watch; DeadlineExceeded after it. */
  timeoutMs?: number;
  /** Stops the watch. */
  signal?: AbortSignal;
}

const TERMINAL = new Set([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED]);

/** The status an event reports (a snapshot's or a status change's). */
export function eventStatus(event: JobEvent): JobStatus | undefined {
  if (event.kind.case === "snapshot") return event.kind.value.status;
  if (event.kind.case === "statusChange") return event.kind.value.status;
  return undefined;
}

/** Whether the job is in a terminal status. */
export function isTerminal(status: JobStatus | undefined): boolean {
  return status !== undefined && TERMINAL.has(status);
}

function environment(name: string): string | undefined {
  const process = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return process?.env?.[name] || undefined;
}

function randomKey(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return "ts-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Creates a client of the easel gateway. */
export function createEaselClient(options: EaselClientOptions = {}): EaselClient {
  return new EaselClient(options);
}

/** A client of the easel gateway over Connect (gRPC-web or gRPC). */
export class EaselClient {
  readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly fetch: typeof globalThis.fetch;
  private readonly services: Promise<{ jobs: Client<typeof JobService>; models: Client<typeof ModelService> }>;
  /** Waits between retries; replaceable so tests can record the waits. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void> = sleep;

  constructor(options: EaselClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? environment("EASEL_URL") ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? 30000;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    const apiKey = options.token === undefined ? (options.apiKey ?? environment("EASEL_API_KEY")) : undefined;
    const credentials: Interceptor = (next) => async (request) => {
      if (options.token !== undefined) request.header.set("authorization", `Bearer ${options.token}`);
      else if (apiKey !== undefined) request.header.set("x-api-key", apiKey);
      return next(request);
    };
    this.services = this.transport(options, [credentials]).then((transport) => ({
      jobs: createClient(JobService, transport),
      models: createClient(ModelService, transport),
    }));
    // A transport that fails to load rejects every call; don't also report it as unhandled.
    this.services.catch(() => undefined);
  }

  private async transport(options: EaselClientOptions, interceptors: Interceptor[]): Promise<Transport> {
    const kind = options.transport ?? "grpc-web";
    if (typeof kind !== "string") return kind;
    if (kind === "grpc") {
      // Node's HTTP/2 transport, loaded only when asked for so browsers never see it.
      const node = await import("@connectrpc/connect-node");
      return node.createGrpcTransport({ baseUrl: this.baseUrl, interceptors });
    }
    return createGrpcWebTransport({ baseUrl: this.baseUrl, interceptors, fetch: this.fetch });
  }

  private async call<T>(invoke: (services: Awaited<EaselClient["services"]>, timeoutMs: number) => Promise<T>): Promise<T> {
    const services = await this.services;
    for (let attempt = 1; ; attempt++) {
      try {
        return await invoke(services, this.timeoutMs);
      } catch (reason) {
        const error = toEaselError(reason);
        const delay = retryDelay(this.retry, attempt, error);
        if (delay === undefined) throw error;
        await this.sleep(delay);
      }
    }
  }

  private submitRequest(spec: JobSpec, options: SubmitOptions): SubmitJobRequest {
    return create(SubmitJobRequestSchema, {
      spec,
      idempotencyKey: options.idempotencyKey || randomKey(),
      startTimeout: options.startTimeoutMs === undefined ? undefined : durationFromMs(options.startTimeoutMs),
    });
  }

  /** Submits a text-to-image job and returns it (PENDING). Throws InvalidArgument (with
   * `fields`) for a bad parameter and QuotaExhausted when the tier's jobs are used up. */
  async submit(prompt: string, params: TextToImageParams & SubmitOptions = {}): Promise<Job> {
    const { idempotencyKey, startTimeoutMs, keepWorkflowMetadata, seed, ...text } = params;
    const textToImage = create(TextToImageSchema, {
      ...text,
      prompt,
      seed: seed === undefined ? undefined : BigInt(seed),
    });
    const spec = create(JobSpecSchema, {
      kind: { case: "textToImage", value: textToImage },
      keepWorkflowMetadata: keepWorkflowMetadata ?? false,
    });
    const request = this.submitRequest(spec, { idempotencyKey, startTimeoutMs });
    const response = await this.call((s, timeoutMs) => s.jobs.submitJob(request, { timeoutMs }));
    return response.job!;
  }

  /** Submits a raw ComfyUI API-format graph, with `[nodeId, input, value]` overrides. */
  async submitWorkflow(graph: JsonObject, options: SubmitOptions & { overrides?: Override[] } = {}): Promise<Job> {
    const workflow = create(WorkflowSchema, {
      graph,
      overrides: (options.overrides ?? []).map(([nodeId, input, value]) =>
        create(InputOverrideSchema, { nodeId, input, value: fromJson(ValueSchema, value as JsonValue) }),
      ),
    });
    const spec = create(JobSpecSchema, {
      kind: { case: "workflow", value: workflow },
      keepWorkflowMetadata: options.keepWorkflowMetadata ?? false,
    });
    const request = this.submitRequest(spec, options);
    const response = await this.call((s, timeoutMs) => s.jobs.submitJob(request, { timeoutMs }));
    return response.job!;
  }

  /** The job; NotFound for an unknown job or another user's. */
  async get(jobId: string): Promise<Job> {
    const response = await this.call((s, timeoutMs) => s.jobs.getJob({ jobId }, { timeoutMs }));
    return response.job!;
  }

  /** Every job of the caller, newest first, across all pages (fetched as iterated). */
  async *list(options: { statuses?: JobStatus[]; pageSize?: number } = {}): AsyncGenerator<Job> {
    let pageToken = "";
    do {
      const request = { pageSize: options.pageSize ?? 100, pageToken, statuses: options.statuses ?? [] };
      const page = await this.call((s, timeoutMs) => s.jobs.listJobs(request, { timeoutMs }));
      yield* page.jobs;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Cancels a pending or running job; a finished one throws FailedPrecondition. */
  async cancel(jobId: string): Promise<Job> {
    const response = await this.call((s, timeoutMs) => s.jobs.cancelJob({ jobId }, { timeoutMs }));
    return response.job!;
  }

  /** The checkpoints the platform can run. */
  async models(): Promise<Model[]> {
    const models: Model[] = [];
    let pageToken = "";
    do {
      const page = await this.call((s, timeoutMs) => s.models.listModels({ pageToken }, { timeoutMs }));
      models.push(...page.models);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return models;
  }

  /** Follows a job: its events (a snapshot first without `afterSeq`) until the one that moves
   * it to a terminal status. A dropped stream is resumed from the last sequence number seen,
   * so every event comes exactly once, in order. */
  watch(jobId: string, options: WatchOptions = {}): JobWatch {
    return new JobWatch(this, jobId, options);
  }

  /** @internal Opens one watch stream after `afterSeq`. */
  async openWatch(jobId: string, afterSeq: bigint, timeoutMs: number | undefined, signal: AbortSignal | undefined) {
    const services = await this.services;
    return services.jobs.watchJob({ jobId, afterSeq }, { timeoutMs, signal });
  }

  /** @internal The retry policy. */
  get retryPolicy(): RetryPolicy {
    return this.retry;
  }

  /** Waits for a terminal status and returns the job (with its outputs when SUCCEEDED).
   * Throws DeadlineExceeded after `timeoutMs`. */
  async wait(jobId: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Job> {
    for await (const _ of this.watch(jobId, options)) {
      // Only the end matters.
    }
    return this.get(jobId);
  }

  /** Downloads one output and checks its size and sha256. An expired link is renewed from the
   * job when `jobId` is given. */
  async download(output: JobOutput, jobId?: string): Promise<Uint8Array<ArrayBuffer>> {
    let response = await this.fetch(new URL(output.url, this.baseUrl + "/"));
    if ((response.status === 401 || response.status === 403 || response.status === 404) && jobId) {
      const fresh = (await this.get(jobId)).outputs.find((o) => o.artifactId === output.artifactId);
      if (!fresh) throw new DownloadError(`job ${jobId} has no output ${output.artifactId}`);
      response = await this.fetch(new URL(fresh.url, this.baseUrl + "/"));
    }
    if (!response.ok) throw new DownloadError(`download of ${output.artifactId} failed: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (output.sizeBytes && BigInt(bytes.length) !== output.sizeBytes) {
      throw new DownloadError(`${output.artifactId}: got ${bytes.length} bytes, the job says ${output.sizeBytes}`);
    }
    const digest = await sha256Hex(bytes);
    if (output.sha256 && digest !== output.sha256.toLowerCase()) {
      throw new DownloadError(`${output.artifactId}: sha256 ${digest} is not the job's ${output.sha256}`);
    }
    return bytes;
  }

  /** Submit, wait and download: the finished job and its images' bytes. Throws JobFailed when
   * the job does not succeed. */
  async generate(
    prompt: string,
    params: TextToImageParams & SubmitOptions & { timeoutMs?: number } = {},
  ): Promise<{ job: Job; images: Uint8Array<ArrayBuffer>[] }> {
    const { timeoutMs, ...submit } = params;
    const submitted = await this.submit(prompt, submit);
    const job = await this.wait(submitted.id, { timeoutMs });
    if (job.status !== JobStatus.SUCCEEDED) throw new JobFailed(job);
    const images: Uint8Array<ArrayBuffer>[] = [];
    for (const output of job.outputs) images.push(await this.download(output, job.id));
    return { job, images };
  }
}

/** The events of one job, resumed after dropped streams (see EaselClient.watch). */
export class JobWatch implements AsyncIterable<JobEvent> {
  /** The sequence number of the last event yielded. */
  lastSeq: bigint;
  /** How many times the stream was resumed. */
  reconnects = 0;
  private readonly deadline?: number;

  constructor(
    private readonly client: EaselClient,
    readonly jobId: string,
    private readonly options: WatchOptions,
  ) {
    this.lastSeq = options.afterSeq ?? 0n;
    this.deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<JobEvent> {
    let failures = 0;
    for (;;) {
      const remaining = this.deadline === undefined ? undefined : Math.max(1, this.deadline - Date.now());
      try {
        const stream = await this.client.openWatch(this.jobId, this.lastSeq, remaining, this.options.signal);
        for await (const response of stream) {
          const event = response.event;
          if (!event || (this.lastSeq > 0n && event.seq <= this.lastSeq)) continue;
          failures = 0;
          this.lastSeq = event.seq;
          yield event;
          if (isTerminal(eventStatus(event))) return;
        }
        // Ended before a terminal event (the server is shutting down): resume.
        this.reconnects++;
      } catch (reason) {
        if (this.options.signal?.aborted) throw reason;
        const error = toEaselError(reason);
        failures++;
        const delay = retryDelay(this.client.retryPolicy, failures, resumable(error));
        if (delay === undefined) throw error;
        if (this.deadline !== undefined && Date.now() + delay >= this.deadline) {
          throw new DeadlineExceeded(Code.DeadlineExceeded, "the watch's timeout passed", {
            metadata: {},
            fieldViolations: [],
          }, { cause: error });
        }
        this.reconnects++;
        await this.client.sleep(delay, this.options.signal);
      }
    }
  }
}

// A stream cut by a dying server surfaces in some runtimes as a transport error without a gRPC
// status (Connect maps those to INTERNAL or UNKNOWN with the socket's message). Such a cut is
// resumable like UNAVAILABLE; an INTERNAL the server itself sent is not.
function resumable(error: EaselError): EaselError {
  const cut = /RST_STREAM|socket|ECONNRESET|ECONNREFUSED|terminated|network|fetch failed|premature|closed/i;
  if ((error.code === Code.Internal || error.code === Code.Unknown) && cut.test(error.rawMessage)) {
    return new EaselError(Code.Unavailable, error.rawMessage, {
      metadata: error.metadata,
      fieldViolations: error.fieldViolations,
      retryAfterMs: error.retryAfterMs,
    });
  }
  return error;
}
