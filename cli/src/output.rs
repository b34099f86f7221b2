//! How results and errors are printed: one clear line per error, text for people, proto3 JSON
//! for scripts (`--json`).

use easel_proto::jobs::v1::{Job, JobStatus};

/// Prints a message as proto3 JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

/// Prints a line for people.
pub fn line(text: impl std::fmt::Display) {
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
}

/// The one-line form of a failure, with the server's field details when there are any.
pub fn error_line(error: &anyhow::Error) -> String {
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        let error = easel_runtime::Error::from_status(status);
        let mut text = format!("{}: {}", error.code(), error.message());
        let fields: Vec<String> = error
            .field_violations()
            .iter()
            .filter(|v| !error.message().contains(&v.description))
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        if !fields.is_empty() {
            text.push_str(&format!(" ({})", fields.join("; ")));
        }
        if let Some(delay) = error.retry_after() {
            text.push_str(&format!(" (retry in {}s)", delay.as_secs().max(1)));
        }
        return text;
    }
    // anyhow's alternate form keeps the chain on one line.
    format!("{error:#}")
}

/// A status as a short lowercase word.
pub fn status_word(status: i32) -> &'static str {
    match JobStatus::try_from(status).unwrap_or(JobStatus::Unspecified) {
        JobStatus::Unspecified => "unknown",
        JobStatus::Pending => "pending",
        JobStatus::Running => "running",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
        JobStatus::Expired => "expired",
    }
}

/// A job as one line: id, status, and what matters for that status.
pub fn job_line(job: &Job) -> String {
    let mut text = format!("{}  {:<9}", job.id, status_word(job.status));
    if job.status == JobStatus::Pending as i32 && job.queue_position > 0 {
        text.push_str(&format!("  position {}", job.queue_position));
    }
    if let Some(progress) = &job.progress
        && job.status == JobStatus::Running as i32
    {
        text.push_str(&format!("  {:.0}%", progress.percent));
    }
    if let Some(error) = &job.error {
        text.push_str(&format!("  {}: {}", error.code, error.message));
    }
    if !job.outputs.is_empty() {
        text.push_str(&format!("  {} output(s)", job.outputs.len()));
    }
    text
}

/// Whether a status is final.
pub fn is_terminal(status: i32) -> bool {
    matches!(
        JobStatus::try_from(status).unwrap_or(JobStatus::Unspecified),
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
    )
}
