//! Steady load on the gateway: submits and GETs at fixed rates (open loop: a slow answer does
//! not slow the schedule, as with independent clients), plus a few watchers that follow jobs
//! over Server-Sent Events and resume with `Last-Event-ID` when a stream breaks. Every request
//! is recorded with its start time, latency and outcome.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The rates and limits of the load.
#[derive(Clone, Debug)]
pub struct LoadSettings {
    /// Job submissions per second.
    pub submits_per_second: f64,
    /// `GET /api/v1/jobs/{id}` per second, on jobs accepted so far.
    pub gets_per_second: f64,
    /// Jobs followed at once over Server-Sent Events.
    pub watchers: usize,
    /// The client's limit on one request; a request that takes longer counts as failed with
    /// this latency.
    pub request_timeout: Duration,
}

/// What a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `POST /api/v1/jobs`.
    Submit,
    /// `GET /api/v1/jobs/{id}`.
    Get,
}

/// One request's record.
#[derive(Clone, Debug)]
pub struct Sample {
    /// What it was.
    pub kind: Kind,
    /// When it started.
    pub started: Instant,
    /// How long it took (the timeout when it timed out).
    pub latency: Duration,
    /// Whether the answer was the expected one (202 for a submit, 200 for a GET).
    pub ok: bool,
}

/// What the watchers saw.
#[derive(Clone, Debug, Default)]
pub struct WatchStats {
    /// Jobs followed to a terminal status.
    pub followed: usize,
    /// Jobs whose stream did not reach a terminal status within the deadline.
    pub unfinished: usize,
    /// Events received twice (an id not above the last one).
    pub repeated: usize,
    /// Jobs with more than one terminal status event.
    pub terminal_twice: usize,
    /// Streams that broke and were resumed.
    pub resumed: usize,
}

#[derive(Debug, Default)]
struct State {
    samples: Vec<Sample>,
    accepted: Vec<String>,
    watched: HashSet<String>,
    watch: WatchStats,
}

/// Everything the load recorded.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    state: Arc<Mutex<State>>,
}

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every request so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.with(|state| state.samples.clone())
    }

    /// The jobs accepted (202) so far, in order.
    pub fn accepted(&self) -> Vec<String> {
        self.with(|state| state.accepted.clone())
    }

    /// What the watchers saw.
    pub fn watch(&self) -> WatchStats {
        self.with(|state| state.watch.clone())
    }
}

/// A gateway client acting as one user.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl Client {
    /// A client of the gateway at `base` with `api_key`.
    pub fn new(base: &str, api_key: &str, timeout: Duration) -> Client {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|error| panic!("http client: {error}"));
        Client {
            http,
            base: base.to_string(),
            api_key: api_key.to_string(),
        }
    }

    /// Submits a small text-to-image job; `Ok(id)` on 202.
    async fn submit(&self, number: u64) -> Result<String, String> {
        let body = serde_json::json!({
            "prompt": format!("chaos {number}"),
            "width": 64,
            "height": 64,
            "steps": 4,
            "seed": number,
        });
        let response = self
            .http
            .post(format!("{}/api/v1/jobs", self.base))
            .header("x-api-key", &self.api_key)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status != 202 {
            return Err(format!("{status}"));
        }
        let job = if body["job"].is_object() {
            &body["job"]
        } else {
            &body
        };
        job["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no job id in {body}"))
    }

    /// `GET /api/v1/jobs/{id}`: the job on 200.
    pub async fn job(&self, id: &str) -> Result<serde_json::Value, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/jobs/{id}", self.base))
            .header("x-api-key", &self.api_key)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status != 200 {
            return Err(format!("{status}"));
        }
        Ok(if body["job"].is_object() {
            body["job"].clone()
        } else {
            body
        })
    }
}

/// The load while it runs.
#[derive(Debug)]
pub struct Running {
    stop: CancellationToken,
    tasks: TaskTracker,
    /// What it recorded.
    pub recorder: Recorder,
}

/// Starts the load against `client`.
pub fn start(client: &Client, settings: &LoadSettings) -> Running {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let recorder = Recorder::default();
    tasks.spawn(submits(
        client.clone(),
        settings.clone(),
        recorder.clone(),
        stop.clone(),
        tasks.clone(),
    ));
    tasks.spawn(gets(
        client.clone(),
        settings.clone(),
        recorder.clone(),
        stop.clone(),
        tasks.clone(),
    ));
    for _ in 0..settings.watchers {
        tasks.spawn(watcher(client.clone(), recorder.clone(), stop.clone()));
    }
    Running {
        stop,
        tasks,
        recorder,
    }
}

impl Running {
    /// Stops scheduling requests and waits for those in flight (each bounded by the request
    /// timeout) and for the watchers to finish their jobs (bounded by `deadline`).
    pub async fn stop(self, deadline: Duration) -> Recorder {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(deadline, self.tasks.wait()).await;
        self.recorder
    }
}

fn period(per_second: f64) -> Duration {
    Duration::from_secs_f64(1.0 / per_second.max(0.01))
}

async fn submits(
    client: Client,
    settings: LoadSettings,
    recorder: Recorder,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let mut ticks = tokio::time::interval(period(settings.submits_per_second));
    // Open loop: a late tick is not made up with a burst, nor are later ticks shifted.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut number = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        number += 1;
        let (client, recorder) = (client.clone(), recorder.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let outcome = client.submit(number).await;
            let latency = started.elapsed();
            recorder.with(|state| {
                state.samples.push(Sample {
                    kind: Kind::Submit,
                    started,
                    latency,
                    ok: outcome.is_ok(),
                });
                if let Ok(id) = outcome {
                    state.accepted.push(id);
                }
            });
        });
    }
}

async fn gets(
    client: Client,
    settings: LoadSettings,
    recorder: Recorder,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let mut ticks = tokio::time::interval(period(settings.gets_per_second));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut turn = 0usize;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Round-robin over the newest jobs: those are the ones that change.
        let Some(id) = recorder.with(|state| {
            let count = state.accepted.len();
            (count > 0).then(|| state.accepted[count - 1 - turn % count.min(8)].clone())
        }) else {
            continue;
        };
        turn += 1;
        let (client, recorder) = (client.clone(), recorder.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let ok = client.job(&id).await.is_ok();
            let latency = started.elapsed();
            recorder.with(|state| {
                state.samples.push(Sample {
                    kind: Kind::Get,
                    started,
                    latency,
                    ok,
                });
            });
        });
    }
}

/// How long a watcher follows one job at most.
const WATCH_DEADLINE: Duration = Duration::from_secs(120);

/// Follows the newest unwatched job to its end, then the next, until stopped.
async fn watcher(client: Client, recorder: Recorder, stop: CancellationToken) {
    let mut idle = tokio::time::interval(Duration::from_millis(100));
    loop {
        if stop.is_cancelled() {
            return;
        }
        let next = recorder.with(|state| {
            let id = state
                .accepted
                .iter()
                .rev()
                .find(|id| !state.watched.contains(*id))
                .cloned();
            if let Some(id) = &id {
                state.watched.insert(id.clone());
            }
            id
        });
        let Some(id) = next else {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = idle.tick() => continue,
            }
        };
        let outcome = follow(&client, &id).await;
        recorder.with(|state| {
            let watch = &mut state.watch;
            watch.repeated += outcome.repeated;
            watch.resumed += outcome.resumed;
            if outcome.terminals > 1 {
                watch.terminal_twice += 1;
            }
            if outcome.terminals > 0 {
                watch.followed += 1;
            } else {
                watch.unfinished += 1;
            }
        });
    }
}

#[derive(Debug, Default)]
struct Followed {
    repeated: usize,
    resumed: usize,
    terminals: usize,
}

/// Reads the job's event stream until a terminal status, resuming after the last event id
/// whenever the stream breaks.
async fn follow(client: &Client, id: &str) -> Followed {
    let until = Instant::now() + WATCH_DEADLINE;
    let mut seen = Followed::default();
    let mut last: Option<u64> = None;
    let mut first = true;
    while Instant::now() < until && seen.terminals == 0 {
        if !first {
            seen.resumed += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first = false;
        let mut request = client
            .http
            .get(format!("{}/api/v1/jobs/{id}/events", client.base))
            .header("x-api-key", &client.api_key)
            .header("accept", "text/event-stream")
            // A stream lives as long as the job; only the connection is bounded.
            .timeout(WATCH_DEADLINE);
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let Ok(response) = request.send().await else {
            continue;
        };
        if response.status() != 200 {
            continue;
        }
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let ended = tokio::time::timeout_at(until, async {
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let (event_id, data) = parse_block(&block);
                    if let Some(event_id) = event_id {
                        if last.is_some_and(|last| event_id <= last) {
                            seen.repeated += 1;
                            continue;
                        }
                        last = Some(event_id);
                    }
                    if data
                        .as_ref()
                        .and_then(easel_e2e::event_status)
                        .is_some_and(easel_e2e::is_terminal)
                    {
                        seen.terminals += 1;
                    }
                }
            }
        })
        .await;
        if ended.is_err() {
            break;
        }
    }
    seen
}

/// The id and JSON data of one Server-Sent Events block.
fn parse_block(block: &str) -> (Option<u64>, Option<serde_json::Value>) {
    let mut id = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    (id, serde_json::from_str(&data).ok())
}

/// The simulator's successful executions, by prompt id, collected from `/history` as they
/// happen: the simulator keeps history in memory only, so a restart would forget them.
#[derive(Debug)]
pub struct Executions {
    seen: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
    url: String,
}

impl Executions {
    /// Starts polling the simulator at `url`.
    pub fn watch(url: &str) -> Executions {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|error| panic!("http client: {error}"));
        let task = tokio::spawn({
            let (seen, http, url) = (seen.clone(), http.clone(), url.to_string());
            async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(250));
                loop {
                    ticks.tick().await;
                    collect(&http, &url, &seen).await;
                }
            }
        });
        Executions {
            seen,
            task,
            http,
            url: url.to_string(),
        }
    }

    /// Reads the history once more now (before the simulator is killed, and at the end).
    pub async fn poll_now(&self) {
        collect(&self.http, &self.url, &self.seen).await;
    }

    /// Successful executions per job: prompt ids are `{job_id}-{attempt}`.
    pub fn of(&self, job_id: &str) -> usize {
        let prefix = format!("{job_id}-");
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|prompt| prompt.starts_with(&prefix))
            .count()
    }
}

impl Drop for Executions {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn collect(http: &reqwest::Client, url: &str, seen: &Mutex<HashSet<String>>) {
    // The newest entries only: the poll is frequent, so a page covers what finished since.
    let Ok(response) = http
        .get(format!("{url}/history?max_items=256"))
        .send()
        .await
    else {
        return;
    };
    let Ok(history) = response.json::<serde_json::Value>().await else {
        return;
    };
    let Some(entries) = history.as_object() else {
        return;
    };
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    for (prompt_id, entry) in entries {
        if entry["status"]["status_str"] == "success" {
            seen.insert(prompt_id.clone());
        }
    }
}
