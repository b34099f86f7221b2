//! The REST contract suite: schemathesis (from PyPI, installed by `scripts/setup.sh`) reads
//! `/openapi.json`, generates requests for every route (valid and invalid ones, bounded in
//! examples and time) and checks each answer against the document: no server error, a
//! documented status, the documented content type, a body matching its schema.

use std::path::PathBuf;
use std::time::Duration;

use easel_proto::account::v1::Tier;

use crate::support::Platform;

/// Where `scripts/setup.sh` installs schemathesis, unless `st` is on the `PATH`.
fn schemathesis() -> PathBuf {
    let tools = std::env::var_os("EASEL_TOOLS_DIR").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/easel-tools"),
        PathBuf::from,
    );
    let installed = tools.join("schemathesis-venv/bin/st");
    assert!(
        installed.exists(),
        "schemathesis is not installed at {}: run scripts/setup.sh",
        installed.display()
    );
    installed
}

/// The whole run's budget, well inside the test's own timeout.
const BUDGET: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_openapi_json_documents() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    // schemathesis keeps a cache of its findings in its working directory: not the checkout.
    let scratch = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(schemathesis())
        .current_dir(scratch.path())
        .arg("run")
        .arg(format!("{}/openapi.json", platform.url))
        .args(["--url", &platform.url])
        .args(["--header", &format!("X-API-Key: {}", user.api_key)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        // The job streams hold their connection until the job ends; their answers are
        // checked by the stream tests.
        .args(["--exclude-path", "/ws/jobs/{id}"])
        .args(["--exclude-path", "/api/v1/jobs/{id}/events"])
        .args(["--max-examples", "15", "--seed", "1", "--workers", "1"])
        .args(["--max-time", &BUDGET.as_secs().to_string()])
        .args(["--request-timeout", "20", "--generation-database", "none"])
        .args(["--no-color", "--output-sanitize", "true"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(report.contains("passed"), "{report}");
}
