//! kill -9 and SIGTERM of each service and of a worker, each restarted on its ports after the
//! outage.

use easel_chaos::{Chaos, Expect, Fault, Setup, Target, assert_promises};

async fn kill_and_terminate(target: Target, setup: Setup) {
    // Killing the bridge or a worker mid-run loses the images it held (they stream from the
    // backend and are written nowhere else), so that run may execute again.
    let expect = match target {
        Target::Bridge | Target::Jobs | Target::Worker => Expect::SUCCEED_AFTER_RERUN,
        _ => Expect::SUCCEED,
    };
    let mut chaos = Chaos::start(setup).await;
    let rows = vec![
        chaos.run(Fault::Kill(target)).await,
        chaos.run(Fault::Term(target)).await,
    ];
    assert_promises(&rows, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_and_terminated_under_load() {
    kill_and_terminate(Target::Gateway, Setup::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_killed_and_terminated_under_load() {
    kill_and_terminate(Target::Auth, Setup::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_killed_and_terminated_under_load() {
    kill_and_terminate(Target::Jobs, Setup::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_killed_and_terminated_under_load() {
    kill_and_terminate(Target::Storage, Setup::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_killed_and_terminated_under_load() {
    kill_and_terminate(Target::Bridge, Setup::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_and_terminated_under_load() {
    let setup = Setup {
        separate_worker: true,
        ..Setup::default()
    };
    kill_and_terminate(Target::Worker, setup).await;
}
