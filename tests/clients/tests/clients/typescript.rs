//! The TypeScript client's suites (`clients/ts/test`) under Node's test runner: over gRPC and
//! gRPC-web from Node, and in Chromium straight to the gateway and through Envoy.

use std::path::Path;

use easel_client_tests::{Testbed, client_suite_options, run_suite, tools_dir};
use easel_e2e::repository_file;
use easel_test_support::Envoy;

/// Copies the package's sources into `dir`, a directory under the tools directory so that
/// both `tsc` and Node find the packages scripts/setup.sh installed there (`node_modules` of
/// a parent directory), and nothing is written into the checkout.
fn copy_package(dir: &Path) {
    let package = repository_file("clients/ts");
    for entry in ["src", "test"] {
        copy_tree(&package.join(entry), &dir.join(entry));
    }
    for file in ["tsconfig.json", "package.json"] {
        std::fs::copy(package.join(file), dir.join(file))
            .unwrap_or_else(|error| panic!("cannot copy {file}: {error}"));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|error| panic!("mkdir {}: {error}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|error| panic!("read {}: {error}", from.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target)
                .unwrap_or_else(|error| panic!("copy {}: {error}", path.display()));
        }
    }
}

/// The suites' tests: 5 per transport, 1 of many watches, 2 of errors, 2 in Chromium. A
/// skipped suite's tests are not counted at all, so fewer means some did not run.
const MIN_TESTS: u32 = 15;

#[tokio::test]
#[ignore = "not yet seen green: its one run so far timed out on an overloaded machine (see the clients helper's report)"]
async fn typescript_client_passes_its_suites_in_node_and_chromium() {
    let mut options = client_suite_options();
    options.gateway_env = vec![
        ("EASEL_CORS_ORIGINS".into(), "http://app.easel.test".into()),
        ("EASEL_TRUST_FORWARDED_FOR".into(), "true".into()),
    ];
    let testbed = Testbed::start(options).await;
    let gateway = testbed.platform.lock().await.gateway.grpc;
    let envoy = Envoy::start(gateway).await;

    let tools = tools_dir();
    let build = tempfile::Builder::new()
        .prefix("ts-client-test-")
        .tempdir_in(&tools)
        .unwrap_or_else(|error| panic!("temp dir: {error}"));
    copy_package(build.path());
    let node_modules = tools.join("node_modules");
    run_suite(
        &node_modules.join(".bin/tsc"),
        &["-p", "."],
        build.path(),
        &[],
    )
    .await;

    let mut environment = testbed.environment();
    environment.push(("EASEL_TEST_ENVOY_URL".into(), envoy.url.clone()));
    environment.push(("NODE_PATH".into(), node_modules.display().to_string()));
    let output = run_suite(
        Path::new("node"),
        &[
            "--test",
            "--test-concurrency=1",
            "--test-reporter=tap",
            "test/errors.test.mjs",
            "test/client.test.mjs",
            "test/browser.test.mjs",
        ],
        build.path(),
        &environment,
    )
    .await;
    // Every test ran against the platform: none skipped for want of it.
    let count = |label: &str| {
        output
            .lines()
            .find_map(|line| line.strip_prefix(&format!("# {label} ")))
            .and_then(|value| value.trim().parse::<u32>().ok())
    };
    assert_eq!(count("fail"), Some(0), "{output}");
    assert_eq!(count("skipped"), Some(0), "{output}");
    assert!(
        count("pass").is_some_and(|passed| passed >= MIN_TESTS),
        "{output}"
    );
}
