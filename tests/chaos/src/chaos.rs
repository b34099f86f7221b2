//! The platform under test and the faults: start it (with the private servers and links a
//! fault needs), run the load, inject one fault, heal it, and count what became of every job.

use std::collections::HashMap;
use std::time::Duration;

use easel_e2e::{Platform, PlatformOptions, User, is_terminal, json_u64};
use easel_proto::account::v1::Tier;
use easel_proto::storage::v1::ListArtifactsRequest;
use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_test_support::ServiceProcess;
use tokio::time::Instant;

use crate::infra::{PostgresCluster, RedisServer};
use crate::link::Link;
use crate::load::{self, Client, Executions, Kind, LoadSettings, Sample};
use crate::report::{Latency, Row};

/// A process of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The public edge.
    Gateway,
    /// Users, keys, rate limits.
    Auth,
    /// The jobs service (API and, unless a separate worker runs, the workers).
    Jobs,
    /// Artifacts.
    Storage,
    /// The ComfyUI pool.
    Bridge,
    /// A jobs process with `EASEL_JOBS_ROLE=worker` (needs [`Setup::separate_worker`]).
    Worker,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
            Target::Auth => "auth",
            Target::Jobs => "jobs",
            Target::Storage => "storage",
            Target::Bridge => "comfy-bridge",
            Target::Worker => "jobs worker",
        }
    }
}

/// One fault, injected and healed while the load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same ports after the outage.
    Kill(Target),
    /// SIGTERM (a drained stop that must exit 0), then a restart after the outage.
    Term(Target),
    /// The private Redis killed and restarted empty.
    RedisRestart,
    /// The private PostgreSQL stopped (`-m immediate`) and started again.
    PostgresRestart,
    /// The only ComfyUI backend (the simulator) killed and restarted on the same port.
    BackendDeath,
    /// The link between the jobs service and comfy-bridge cut, then restored.
    Partition,
    /// The same link delayed by [`DELAY`] each way (`tc netem`).
    Delay,
}

/// The shortest backend outage and partition: long enough that waiting jobs meet the bridge's
/// breaker and the workers' retry backoff (issue 11's backend outage is 20 s:
/// `EASEL_CHAOS_SECONDS=20`), and that a cut link outlasts several TCP retransmissions.
pub const LONG_OUTAGE: Duration = Duration::from_secs(8);

/// The delay of [`Fault::Delay`], each way.
pub const DELAY: Duration = Duration::from_millis(200);

impl Fault {
    /// The fault's name in the table.
    pub fn name(self) -> String {
        match self {
            Fault::Kill(target) => format!("kill -9 {}", target.name()),
            Fault::Term(target) => format!("SIGTERM {}", target.name()),
            Fault::RedisRestart => "Redis restart (empty)".into(),
            Fault::PostgresRestart => "PostgreSQL restart".into(),
            Fault::BackendDeath => "backend death".into(),
            Fault::Partition => "partition jobs-bridge".into(),
            Fault::Delay => format!("delay {} ms jobs-bridge", DELAY.as_millis()),
        }
    }
}

/// What the platform needs for the faults a test injects.
#[derive(Clone, Copy, Debug, Default)]
pub struct Setup {
    /// A Redis of the suite's own (for [`Fault::RedisRestart`]).
    pub private_redis: bool,
    /// A PostgreSQL of the suite's own (for [`Fault::PostgresRestart`]).
    pub private_postgres: bool,
    /// Jobs with role `api` plus a worker process (for [`Target::Worker`]).
    pub separate_worker: bool,
    /// The jobs service reaches comfy-bridge through a [`Link`] (for partition and delay).
    pub link: bool,
}

/// How long each phase lasts.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Load before the fault (the baseline).
    pub warmup: Duration,
    /// How long the fault lasts before it is healed.
    pub outage: Duration,
    /// Load after the fault healed.
    pub recovery: Duration,
    /// How long accepted jobs may take to reach a terminal status once the load stopped.
    pub settle: Duration,
}

impl Timing {
    /// The short form by default; `EASEL_CHAOS_SECONDS` sets the outage (the long form), with
    /// warm-up and recovery growing with it.
    pub fn from_env() -> Timing {
        let outage = std::env::var("EASEL_CHAOS_SECONDS")
            .ok()
            .and_then(|seconds| seconds.parse::<f64>().ok())
            .filter(|seconds| *seconds > 0.0)
            .map_or(Duration::from_secs(2), Duration::from_secs_f64);
        Timing {
            warmup: (outage / 4).max(Duration::from_millis(1500)),
            outage,
            recovery: outage.max(Duration::from_millis(2500)),
            settle: Duration::from_secs(90) + outage * 2,
        }
    }
}

/// The load's rates: `EASEL_CHAOS_RATE` submits per second (default 2), three GETs per
/// submit, `EASEL_CHAOS_WATCHERS` watchers (default 3).
pub fn load_from_env() -> LoadSettings {
    let rate = std::env::var("EASEL_CHAOS_RATE")
        .ok()
        .and_then(|rate| rate.parse::<f64>().ok())
        .filter(|rate| *rate > 0.0)
        .unwrap_or(2.0);
    let watchers = std::env::var("EASEL_CHAOS_WATCHERS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(3);
    LoadSettings {
        submits_per_second: rate,
        gets_per_second: rate * 3.0,
        watchers,
        request_timeout: Duration::from_secs(15),
    }
}

/// The platform under test. Fields drop in order: processes before the servers they use.
pub struct Chaos {
    worker: Option<ServiceProcess>,
    /// The platform.
    pub platform: Platform,
    link: Option<Result<Link, String>>,
    redis: Option<RedisServer>,
    postgres: Option<PostgresCluster>,
    user: User,
    client: Client,
    executions: Executions,
    load: LoadSettings,
    timing: Timing,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chaos")
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
        .collect()
}

impl Chaos {
    /// Starts the platform for `setup`, with the timing and load of the environment.
    pub async fn start(setup: Setup) -> Chaos {
        Box::pin(Chaos::launch(setup)).await
    }

    async fn launch(setup: Setup) -> Chaos {
        let redis = if setup.private_redis {
            Some(RedisServer::start().await)
        } else {
            None
        };
        let postgres = if setup.private_postgres {
            Some(PostgresCluster::start().await)
        } else {
            None
        };
        let link = if setup.link {
            Some(Link::create().await)
        } else {
            None
        };

        let mut auth_env = Vec::new();
        for tier in ["FREE", "PRO", "ENTERPRISE"] {
            // The load is the test's, not a tenant to limit.
            for (limit, value) in [
                ("REQUESTS_PER_MINUTE", "1000000"),
                ("BURST", "100000"),
                ("CONCURRENT_JOBS", "100000"),
                ("JOBS_PER_DAY", "100000000"),
            ] {
                auth_env.push((format!("EASEL_TIER_{tier}_{limit}"), value.to_string()));
            }
        }
        // An operator's settings for fast recovery: a silent worker's job is taken back after
        // 3 s (not 60 s), and jobs a restarted Redis forgot are re-enqueued within seconds.
        let mut jobs_env = pairs(&[
            ("EASEL_VISIBILITY_TIMEOUT", "3s"),
            ("EASEL_RECONCILE_INTERVAL", "1s"),
            ("EASEL_RECONCILE_GRACE", "3s"),
        ]);
        if setup.separate_worker {
            jobs_env.push(("EASEL_JOBS_ROLE".into(), "api".into()));
        }
        if let Some(Ok(link)) = &link {
            jobs_env.push(("EASEL_BRIDGE_URL".into(), link.front_url()));
        }
        let options = PlatformOptions {
            auth_env,
            // Each job takes a few hundred milliseconds on the backend, so faults meet jobs
            // in flight while the backend keeps up with the load.
            sim_args: vec!["--step-delay-ms".into(), "40".into()],
            jobs_env,
            redis_url: redis.as_ref().map(RedisServer::url),
            postgres_admin_url: postgres.as_ref().map(PostgresCluster::admin_url),
            ..PlatformOptions::default()
        };
        let platform = Platform::start_with(options).await;
        if let Some(Ok(link)) = &link {
            link.connect_to(platform.bridge.grpc);
        }
        let worker = if setup.separate_worker {
            let mut variables: Vec<(&str, &str)> = platform
                .jobs
                .variables()
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            variables.push(("EASEL_JOBS_ROLE", "worker"));
            let binary = easel_test_support::workspace_binary("easel-jobs", "easel-jobs");
            Some(ServiceProcess::spawn(&binary, &variables).await)
        } else {
            None
        };
        let user = platform.create_user(Tier::Enterprise).await;
        let load = load_from_env();
        let client = Client::new(&platform.url(), &user.api_key, load.request_timeout);
        let executions = Executions::watch(&platform.simulator.url);
        Chaos {
            worker,
            platform,
            link,
            redis,
            postgres,
            user,
            client,
            executions,
            load,
            timing: Timing::from_env(),
        }
    }

    fn process(&mut self, target: Target) -> &mut ServiceProcess {
        match target {
            Target::Gateway => &mut self.platform.gateway,
            Target::Auth => &mut self.platform.auth,
            Target::Jobs => &mut self.platform.jobs,
            Target::Storage => &mut self.platform.storage,
            Target::Bridge => &mut self.platform.bridge,
            Target::Worker => self
                .worker
                .as_mut()
                .unwrap_or_else(|| panic!("the worker fault needs Setup::separate_worker")),
        }
    }

    /// How long `fault` lasts: the backend's death and a partition at least
    /// [`LONG_OUTAGE`].
    fn outage(&self, fault: Fault) -> Duration {
        if matches!(fault, Fault::BackendDeath | Fault::Partition) {
            self.timing.outage.max(LONG_OUTAGE)
        } else {
            self.timing.outage
        }
    }

    /// Injects `fault`, keeps it for the outage, heals it. `Err` says why it cannot run here;
    /// `Ok(Some(why))` is a SIGTERM that did not end in a clean exit.
    async fn inject(&mut self, fault: Fault) -> Result<Option<String>, String> {
        let outage = self.outage(fault);
        let mut exit = None;
        match fault {
            Fault::Kill(target) | Fault::Term(target) => {
                let signal = if matches!(fault, Fault::Kill(_)) {
                    "KILL"
                } else {
                    "TERM"
                };
                let process = self.process(target);
                process.signal(signal).await;
                // A drained stop takes up to the grace period (3 s) plus a busy machine's slack.
                let status = process.wait_exit(Duration::from_secs(60)).await;
                if signal == "TERM" {
                    exit = match status {
                        Some(status) if status.success() => None,
                        Some(status) => Some(format!("{} ended with {status}", target.name())),
                        None => Some(format!("{} still ran 60 s after SIGTERM", target.name())),
                    };
                }
                tokio::time::sleep(outage).await;
                self.process(target).restart().await;
            }
            Fault::RedisRestart => {
                let redis = self.redis.as_mut().ok_or("needs Setup::private_redis")?;
                redis.kill().await;
                tokio::time::sleep(outage).await;
                redis.start_again().await;
            }
            Fault::PostgresRestart => {
                let postgres = self
                    .postgres
                    .as_ref()
                    .ok_or("needs Setup::private_postgres")?;
                postgres.stop_immediately().await;
                tokio::time::sleep(outage).await;
                postgres.start_again().await;
            }
            Fault::BackendDeath => {
                // Read the history first: the simulator forgets it when it dies.
                self.executions.poll_now().await;
                self.platform.simulator.kill().await;
                tokio::time::sleep(outage).await;
                self.platform.simulator.restart().await;
            }
            Fault::Partition | Fault::Delay => {
                let link = match &self.link {
                    Some(Ok(link)) => link,
                    Some(Err(reason)) => return Err(reason.clone()),
                    None => return Err("needs Setup::link".into()),
                };
                if fault == Fault::Partition {
                    link.cut()?;
                    tokio::time::sleep(outage).await;
                    link.restore()?;
                } else {
                    link.netem_support()?;
                    link.delay(DELAY)?;
                    tokio::time::sleep(outage).await;
                    link.undelay()?;
                }
            }
        }
        Ok(exit)
    }

    /// Whether `fault` can run here; `Err` says why not (before any load is spent on it).
    fn available(&self, fault: Fault) -> Result<(), String> {
        match (fault, &self.link) {
            (Fault::Partition | Fault::Delay, Some(Err(reason))) => Err(reason.clone()),
            (Fault::Delay, Some(Ok(link))) => link.netem_support(),
            _ => Ok(()),
        }
    }

    /// Runs the load, injects `fault` after the warm-up, heals it, keeps the load for the
    /// recovery, then waits for every accepted job to end and counts.
    pub async fn run(&mut self, fault: Fault) -> Row {
        if let Err(reason) = self.available(fault) {
            return Row::skipped(&fault.name(), &reason);
        }
        let running = load::start(&self.client, &self.load);
        tokio::time::sleep(self.timing.warmup).await;
        // Strike while a job runs, so the fault meets work in flight.
        self.wait_for_a_running_job(&running.recorder).await;
        let injected = Instant::now();
        let exit = match self.inject(fault).await {
            Ok(exit) => exit,
            Err(reason) => {
                let _ = running.stop(self.timing.settle).await;
                return Row::skipped(&fault.name(), &reason);
            }
        };
        let outage = injected.elapsed();
        tokio::time::sleep(self.timing.recovery).await;
        let stopped = Instant::now();
        let recorder = running.stop(self.timing.settle).await;
        let accepted = recorder.accepted();
        let finals = self.settle(&accepted).await;
        let settled = stopped.elapsed();
        self.executions.poll_now().await;

        let samples = recorder.samples();
        let window = |kind: Kind, from: Option<Instant>, until: Option<Instant>| {
            let chosen: Vec<&Sample> = samples
                .iter()
                .filter(|sample| sample.kind == kind)
                .filter(|sample| from.is_none_or(|from| sample.started >= from))
                .filter(|sample| until.is_none_or(|until| sample.started < until))
                .collect();
            Latency::of(
                chosen.iter().map(|sample| sample.latency).collect(),
                chosen.iter().filter(|sample| !sample.ok).count(),
            )
        };
        let mut row = Row {
            fault: fault.name(),
            accepted: accepted.len(),
            submit: window(Kind::Submit, Some(injected), None),
            get: window(Kind::Get, Some(injected), None),
            submit_before: window(Kind::Submit, None, Some(injected)),
            get_before: window(Kind::Get, None, Some(injected)),
            watch: recorder.watch(),
            outage,
            settled,
            unclean_exit: exit,
            ..Row::default()
        };
        let artifacts = self.artifacts(&accepted).await;
        for id in &accepted {
            let executed = self.executions.of(id);
            let stored = artifacts.get(id).copied().unwrap_or(0);
            if executed > 1 {
                row.executed_twice += 1;
            }
            if stored > 1 {
                row.stored_twice += 1;
            }
            if executed > 1 || stored > 1 {
                row.duplicated += 1;
            }
            match finals.get(id) {
                Some(job) if job["status"] == "completed" => {
                    row.succeeded += 1;
                    row.observed += usize::from(executed > 0);
                    row.listed += usize::from(stored > 0);
                    if json_u64(&job["attempts"]).unwrap_or(1) > 1 {
                        row.retried += 1;
                    }
                }
                Some(job) => {
                    row.failed += 1;
                    row.failures.push(format!(
                        "{} {}: {}",
                        job["status"].as_str().unwrap_or_default(),
                        job["error"]["code"].as_str().unwrap_or_default(),
                        job["error"]["message"].as_str().unwrap_or_default()
                    ));
                }
                None => row.lost += 1,
            }
        }
        row
    }

    /// Waits (up to a deadline; the fault is injected anyway after it) until one of the newest
    /// accepted jobs is RUNNING.
    async fn wait_for_a_running_job(&self, recorder: &load::Recorder) {
        let until = Instant::now() + Duration::from_secs(30);
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        while Instant::now() < until {
            ticks.tick().await;
            let accepted = recorder.accepted();
            for id in accepted.iter().rev().take(3) {
                if let Ok(job) = self.client.job(id).await
                    && job["status"] == "processing"
                {
                    return;
                }
            }
        }
    }

    /// Polls every accepted job until it is terminal or the settle deadline passes; returns
    /// the terminal ones.
    async fn settle(&self, accepted: &[String]) -> HashMap<String, serde_json::Value> {
        let until = Instant::now() + self.timing.settle;
        let mut done = HashMap::new();
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        loop {
            for id in accepted {
                if done.contains_key(id) {
                    continue;
                }
                if let Ok(job) = self.client.job(id).await
                    && job["status"].as_str().is_some_and(is_terminal)
                {
                    done.insert(id.clone(), job);
                }
            }
            if done.len() == accepted.len() || Instant::now() >= until {
                return done;
            }
            ticks.tick().await;
        }
    }

    /// Stored artifacts per job, from the storage service.
    async fn artifacts(&self, jobs: &[String]) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        let Ok(mut storage) = StorageServiceClient::connect(self.platform.storage.grpc_url()).await
        else {
            return counts;
        };
        for id in jobs {
            let listed = storage
                .list_artifacts(ListArtifactsRequest {
                    owner: self.user.id.clone(),
                    job_id: id.clone(),
                    page_size: 100,
                    page_token: String::new(),
                })
                .await;
            if let Ok(listed) = listed {
                counts.insert(id.clone(), listed.into_inner().artifacts.len());
            }
        }
        counts
    }
}
