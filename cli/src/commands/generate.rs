//! `easel generate`: submit a text-to-image job, follow it with a progress bar, write the image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use easel_proto::jobs::v1::job_event::Kind;
use easel_proto::jobs::v1::job_spec;
use easel_proto::jobs::v1::{
    Job, JobSpec, JobStatus, Sampler, Scheduler, SubmitJobRequest, TextToImage, WatchJobRequest,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Clients;
use crate::output;

/// What to generate.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// What to draw.
    pub prompt: String,
    /// What to keep out of the image.
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Width in pixels (a multiple of 8).
    #[arg(long)]
    pub width: Option<u32>,
    /// Height in pixels (a multiple of 8).
    #[arg(long)]
    pub height: Option<u32>,
    /// Sampling steps.
    #[arg(long)]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale.
    #[arg(long)]
    pub cfg: Option<f64>,
    /// Sampler, e.g. euler or dpmpp_2m.
    #[arg(long, value_parser = super::parse_sampler)]
    pub sampler: Option<Sampler>,
    /// Scheduler, e.g. normal or karras.
    #[arg(long, value_parser = super::parse_scheduler)]
    pub scheduler: Option<Scheduler>,
    /// Noise seed (easel picks one when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Checkpoint name (see `easel models`).
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// Images in one run.
    #[arg(long)]
    pub batch: Option<u32>,
    /// Where to write the image (batch items get -1, -2… before the extension).
    #[arg(short, long, default_value = "out.png")]
    pub output: PathBuf,
    /// Makes retrying this command safe: the same key returns the same job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// Runs `easel generate`.
pub async fn run(clients: &mut Clients, args: GenerateArgs, json: bool) -> anyhow::Result<()> {
    let spec = JobSpec {
        kind: Some(job_spec::Kind::TextToImage(TextToImage {
            prompt: args.prompt.clone(),
            negative_prompt: args.negative.clone(),
            width: args.width.unwrap_or(0),
            height: args.height.unwrap_or(0),
            steps: args.steps.unwrap_or(0),
            cfg_scale: args.cfg,
            sampler: args.sampler.map_or(0, |s| s as i32),
            scheduler: args.scheduler.map_or(0, |s| s as i32),
            seed: args.seed,
            checkpoint: args.checkpoint.clone().unwrap_or_default(),
            batch_size: args.batch.unwrap_or(0),
        })),
        ..Default::default()
    };
    let submitted = clients
        .jobs
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
            start_timeout: None,
        })
        .await?
        .into_inner();
    let job = submitted.job.context("the server answered without a job")?;
    let progress = (!json).then(|| progress_bar(&job));
    let finished = follow(clients, &job, progress.as_ref()).await?;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }

    if finished.status != JobStatus::Succeeded as i32 {
        let reason = finished
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_else(|| output::status_word(finished.status).to_string());
        bail!("job {} {}", finished.id, reason);
    }
    let written = download_outputs(&finished, &args.output).await?;
    if json {
        output::print_json(&finished)?;
    } else {
        let seed = finished.metadata.as_ref().map_or(0, |m| m.seed);
        for path in &written {
            output::line(format!(
                "wrote {} (job {}, seed {seed})",
                path.display(),
                finished.id
            ));
        }
    }
    Ok(())
}

fn progress_bar(job: &Job) -> ProgressBar {
    let bar = ProgressBar::new(100);
    let style = ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {pos:>3}%")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("{} queued", job.id));
    bar
}

/// Follows the job's events until it ends; returns the final job.
pub async fn follow(
    clients: &mut Clients,
    job: &Job,
    bar: Option<&ProgressBar>,
) -> anyhow::Result<Job> {
    let mut stream = clients
        .jobs
        .watch_job(WatchJobRequest {
            job_id: job.id.clone(),
            after_seq: 0,
        })
        .await?
        .into_inner();
    let mut latest = job.clone();
    while let Some(response) = stream.message().await? {
        let Some(event) = response.event else {
            continue;
        };
        match event.kind {
            Some(Kind::Snapshot(snapshot)) => latest = snapshot,
            Some(Kind::StatusChange(change)) => {
                latest.status = change.status;
                latest.error = change.error;
                if let Some(bar) = bar {
                    bar.set_message(format!(
                        "{} {}",
                        latest.id,
                        output::status_word(change.status)
                    ));
                }
            }
            Some(Kind::QueuePosition(position)) => {
                if let Some(bar) = bar {
                    bar.set_message(format!(
                        "{} queued, position {}",
                        latest.id, position.position
                    ));
                }
            }
            Some(Kind::Progress(progress)) => {
                if let Some(bar) = bar {
                    bar.set_position(progress.percent.clamp(0.0, 100.0) as u64);
                    if progress.max_steps > 0 {
                        bar.set_message(format!(
                            "{} step {}/{}",
                            progress.node_class, progress.step, progress.max_steps
                        ));
                    }
                }
            }
            Some(Kind::Output(item)) => latest.outputs.push(item),
            None => {}
        }
        if output::is_terminal(latest.status) {
            break;
        }
    }
    // The stream's last word may predate the signed URLs; read the job once more.
    let job = clients
        .jobs
        .get_job(easel_proto::jobs::v1::GetJobRequest {
            job_id: latest.id.clone(),
        })
        .await?
        .into_inner()
        .job
        .unwrap_or(latest);
    Ok(job)
}

async fn download_outputs(job: &Job, target: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut written = Vec::new();
    for (index, item) in job.outputs.iter().enumerate() {
        let path = if index == 0 {
            target.to_path_buf()
        } else {
            numbered(target, index)
        };
        let response = http
            .get(&item.url)
            .send()
            .await
            .context("cannot download the image")?;
        if !response.status().is_success() {
            bail!(
                "downloading output {} failed with HTTP {}",
                item.artifact_id,
                response.status()
            );
        }
        let bytes = response.bytes().await?;
        tokio::fs::write(&path, &bytes)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    if written.is_empty() {
        bail!("job {} succeeded without outputs", job.id);
    }
    Ok(written)
}

fn numbered(path: &Path, index: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{index}"),
    };
    path.with_file_name(name)
}
