//! Live queue positions for watchers of PENDING jobs. When the queue moves (a job anywhere in
//! the deployment changes status: it started, ended, or came back), one query ranks the
//! PENDING jobs this process's watchers follow, and each whose position changed gets a
//! `queue_position` event: stored and numbered like any other (so resumes see it and sequence
//! numbers stay gapless) and published to every watcher. The cost is bounded whatever the
//! traffic: at most one ranking and one transaction per interval per process, for at most
//! [`MAX_JOBS`] jobs, and nothing while no PENDING job is watched. A job pushed back by newer
//! jobs of a higher class shows its new position at the queue's next movement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use easel_proto::jobs::v1::QueuePosition;
use easel_runtime::Shutdown;

use crate::db;
use crate::model::millis;
use crate::service::Jobs;

/// The shortest time between two rankings: movements within it are reported together.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// Jobs ranked per pass; more watched jobs are taken in turns.
const MAX_JOBS: usize = 1000;

/// Records and publishes positions until `shutdown`.
pub async fn run(jobs: Arc<Jobs>, shutdown: Shutdown) {
    // What this process last recorded, to skip jobs that did not move.
    let mut recorded: HashMap<String, u32> = HashMap::new();
    let mut turn = 0;
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            () = jobs.hub.queue_moved() => {}
        }
        let mut watched = jobs.hub.watched_job_ids();
        recorded.retain(|job_id, _| watched.contains(job_id));
        if watched.len() > MAX_JOBS {
            watched.sort_unstable();
            turn = (turn + MAX_JOBS) % watched.len();
            watched.rotate_left(turn);
            watched.truncate(MAX_JOBS);
        }
        if let Err(error) = pass(&jobs, &watched, &mut recorded).await {
            tracing::warn!(error = %error, "recording queue positions failed");
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(MIN_INTERVAL) => {}
        }
    }
}

async fn pass(
    jobs: &Jobs,
    watched: &[String],
    recorded: &mut HashMap<String, u32>,
) -> crate::error::Result<()> {
    if watched.is_empty() {
        return Ok(());
    }
    let mut moved = Vec::new();
    for (job_id, position) in db::queue_positions(&jobs.db, watched).await? {
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        if recorded.get(&job_id) != Some(&position) {
            let eta = jobs.pending_eta(u64::from(position)).await;
            moved.push((job_id, QueuePosition { position, eta }));
        }
    }
    let now = millis(jobs.clock.now());
    let events = db::record_positions(&jobs.db, &moved, now).await?;
    for (job_id, position) in moved {
        recorded.insert(job_id, position.position);
    }
    jobs.hub.publish_all(&events).await;
    Ok(())
}
