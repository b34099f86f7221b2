//! `easel jobs list|get|cancel|watch`.

use easel_proto::jobs::v1::job_event::Kind;
use easel_proto::jobs::v1::{
    CancelJobRequest, GetJobRequest, JobStatus, ListJobsRequest, WatchJobRequest,
};
use easel_proto::names::ShortName;

use crate::client::Clients;
use crate::output;

/// The `jobs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Lists your jobs, newest first.
    List {
        /// Only jobs in these statuses (pending, running, succeeded, failed, cancelled, expired).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        /// Jobs per page.
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        /// The `nextPageToken` of the previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Shows one job.
    Get {
        /// The job id.
        id: String,
    },
    /// Cancels a pending or running job.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Prints a job's events until it ends.
    Watch {
        /// The job id.
        id: String,
        /// Resume after this event sequence number.
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
    },
}

/// Runs a `jobs` subcommand.
pub async fn run(clients: &mut Clients, command: JobsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            status,
            page_size,
            page_token,
        } => {
            let statuses = status
                .iter()
                .map(|name| parse_status(name).map(|s| s as i32))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let page = clients
                .jobs
                .list_jobs(ListJobsRequest {
                    page_size,
                    page_token,
                    statuses,
                })
                .await?
                .into_inner();
            if json {
                return output::print_json(&page);
            }
            for job in &page.jobs {
                output::line(output::job_line(job));
            }
            if !page.next_page_token.is_empty() {
                output::line(format!("more: --page-token {}", page.next_page_token));
            }
        }
        JobsCommand::Get { id } => {
            let job = clients
                .jobs
                .get_job(GetJobRequest { job_id: id })
                .await?
                .into_inner();
            if json {
                return output::print_json(&job);
            }
            if let Some(job) = &job.job {
                output::line(output::job_line(job));
                for item in &job.outputs {
                    output::line(format!(
                        "  {} {} {} bytes",
                        item.artifact_id, item.content_type, item.size_bytes
                    ));
                }
            }
        }
        JobsCommand::Cancel { id } => {
            let job = clients
                .jobs
                .cancel_job(CancelJobRequest { job_id: id })
                .await?
                .into_inner();
            if json {
                return output::print_json(&job);
            }
            if let Some(job) = &job.job {
                output::line(output::job_line(job));
            }
        }
        JobsCommand::Watch { id, after_seq } => {
            let mut stream = clients
                .jobs
                .watch_job(WatchJobRequest {
                    job_id: id,
                    after_seq,
                })
                .await?
                .into_inner();
            while let Some(response) = stream.message().await? {
                let Some(event) = response.event else {
                    continue;
                };
                if json {
                    output::print_json(&event)?;
                    continue;
                }
                let text = match &event.kind {
                    Some(Kind::Snapshot(job)) => format!("snapshot  {}", output::job_line(job)),
                    Some(Kind::StatusChange(change)) => {
                        format!("status    {}", output::status_word(change.status))
                    }
                    Some(Kind::QueuePosition(position)) => {
                        format!("queued    position {}", position.position)
                    }
                    Some(Kind::Progress(progress)) => format!(
                        "progress  {} {} {}/{} ({:.0}%)",
                        progress.node_id,
                        progress.node_class,
                        progress.step,
                        progress.max_steps,
                        progress.percent
                    ),
                    Some(Kind::Output(item)) => {
                        format!("output    {} {}", item.artifact_id, item.content_type)
                    }
                    None => continue,
                };
                output::line(format!("#{:<4} {text}", event.seq));
            }
        }
    }
    Ok(())
}

fn parse_status(name: &str) -> anyhow::Result<JobStatus> {
    JobStatus::parse(name.trim()).ok_or_else(|| anyhow::anyhow!("unknown status {name:?}"))
}
