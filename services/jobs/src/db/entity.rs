//! The jobs service's tables: `jobs`, `job_events`, `job_idempotency_keys` and
//! `job_owner_counters`.

/// The `jobs` table: one row per job, the source of truth of its state.
pub mod job {
    use sea_orm::entity::prelude::*;

    /// One job. Times are Unix milliseconds, compared the same way on PostgreSQL and SQLite;
    /// proto-shaped values are stored as their proto3 JSON.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        /// `job_…`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The owning user's id.
        pub owner: String,
        /// `easel.jobs.v1.JobStatus` as a number.
        pub status: i32,
        /// Queue priority class (higher runs first).
        pub priority: i32,
        /// The request's `JobSpec`, resolved (defaults and seed filled in).
        pub spec: String,
        /// `JobMetadata`.
        pub metadata: String,
        /// Runs started so far.
        pub attempts: i32,
        /// Runs allowed.
        pub max_attempts: i32,
        /// Backend of the latest attempt.
        pub backend: String,
        /// `Progress`, while running.
        pub progress: Option<String>,
        /// `JobError`, when failed (or the last retried failure).
        pub error: Option<String>,
        /// `[JobOutput]` without signed links.
        pub outputs: String,
        /// Backends earlier attempts failed on (JSON array of names).
        pub excluded_backends: String,
        /// The idempotency key of the submit, if any.
        pub idempotency_key: Option<String>,
        /// SHA-256 of the canonical request.
        pub request_hash: String,
        /// W3C trace context of the submit (JSON object).
        pub trace_context: String,
        /// Trace id of the submit.
        pub trace_id: String,
        /// Days the outputs are kept.
        pub retention_days: i32,
        /// When accepted.
        pub created_at_ms: i64,
        /// Last change.
        pub updated_at_ms: i64,
        /// When the latest attempt started.
        pub started_at_ms: Option<i64>,
        /// When terminal.
        pub finished_at_ms: Option<i64>,
        /// Latest start; after it a PENDING job expires.
        pub start_deadline_ms: Option<i64>,
        /// The worker holding the job (RUNNING, or PENDING while it waits for a backend).
        pub lease_owner: Option<String>,
        /// When that lease lapses unless renewed.
        pub lease_expires_ms: Option<i64>,
        /// The last event's sequence number.
        pub seq: i64,
        /// The queue position last recorded as an event, while PENDING.
        pub queue_position: Option<i32>,
        /// Why a PENDING job is not running (`waiting_for_backend`), if not its turn.
        pub pending_reason: Option<String>,
        /// Runs lost with their backend that spent no attempt.
        pub lost_runs: i32,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `job_events` table: every event of every job, the source of truth of watch resumes.
pub mod event {
    use sea_orm::entity::prelude::*;

    /// One event.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "job_events")]
    pub struct Model {
        /// The job.
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: String,
        /// Per-job sequence number from 1, without gaps.
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        /// `status_change`, `progress` or `output`.
        pub kind: String,
        /// The `JobEvent` as proto3 JSON.
        pub payload: String,
        /// When it happened.
        pub time_ms: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `job_idempotency_keys` table.
pub mod idempotency {
    use sea_orm::entity::prelude::*;

    /// One key of one owner.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "job_idempotency_keys")]
    pub struct Model {
        /// The owner.
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner: String,
        /// The client's key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// SHA-256 of the canonical request.
        pub request_hash: String,
        /// The job the key made (or is making).
        pub job_id: String,
        /// Whether the job exists (false while the first request is in flight).
        pub completed: bool,
        /// When the key was taken.
        pub created_at_ms: i64,
        /// When the key may be used again for another request.
        pub expires_at_ms: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `job_owner_counters` table: per owner, what the quotas compare against, kept by the
/// transactions that change it (a submit batch adds, a job's terminal transition subtracts), so
/// checking a quota reads one row instead of counting jobs.
pub mod counter {
    use sea_orm::entity::prelude::*;

    /// One owner's counters.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "job_owner_counters")]
    pub struct Model {
        /// The owner.
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner: String,
        /// Jobs PENDING or RUNNING.
        pub active: i64,
        /// The UTC day (days since the Unix epoch) `day_jobs` counts.
        pub day: i64,
        /// Jobs accepted on that day.
        pub day_jobs: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
