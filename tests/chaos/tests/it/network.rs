//! The link between the jobs service and comfy-bridge, through network namespaces of the
//! suite's own: cut (a partition), then delayed with `tc netem`. Where the machine does not
//! allow namespaces or netem, the fault's row says "skipped" and why.

use easel_chaos::{Chaos, Expect, Fault, Setup, assert_promises};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_to_bridge_partitioned_then_delayed_under_load() {
    let setup = Setup {
        link: true,
        ..Setup::default()
    };
    let mut chaos = Chaos::start(setup).await;
    let rows = vec![
        chaos.run(Fault::Partition).await,
        chaos.run(Fault::Delay).await,
    ];
    assert_promises(&rows, Expect::SUCCEED);
}
