//! The Python client's pytest suite (`clients/python/tests`).

use easel_client_tests::{Testbed, client_suite_options, run_suite, tools_dir};
use easel_e2e::repository_file;

#[tokio::test]
async fn python_client_passes_its_suite_against_the_platform() {
    let testbed = Testbed::start(client_suite_options()).await;
    let package = repository_file("clients/python");
    let python = tools_dir().join("clients-venv/bin/python");
    let mut environment = testbed.environment();
    environment.push((
        "PYTHONPATH".into(),
        package.join("src").display().to_string(),
    ));
    // Nothing written into the checkout: runs in parallel and CI's clone stay clean.
    environment.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    let output = run_suite(
        &python,
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests",
        ],
        &package,
        &environment,
    )
    .await;
    // Every test ran against the platform: none skipped for want of it.
    assert!(
        output.contains(" passed") && !output.contains("skipped"),
        "{output}"
    );
}
