// @easel/client: easel's API from TypeScript, in Node 20+ (gRPC or gRPC-web) and in browsers
// (gRPC-web). The messages are the generated protobuf-es types, re-exported here.

export {
  createEaselClient,
  EaselClient,
  JobWatch,
  DEFAULT_RETRY,
  retryDelay,
  eventStatus,
  isTerminal,
  type EaselClientOptions,
  type RetryPolicy,
  type TextToImageParams,
  type SubmitOptions,
  type Override,
  type WatchOptions,
} from "./client.js";
export * from "./errors.js";
export * from "./gen/easel/jobs/v1/jobs_pb.js";
export * from "./gen/easel/models/v1/models_pb.js";
export * as account from "./gen/easel/account/v1/account_pb.js";
