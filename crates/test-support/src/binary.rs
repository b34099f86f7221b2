//! Workspace binaries for tests that run a service as a real process.

use std::sync::Mutex;

/// The path of a workspace binary (e.g. `easel-storage`, `easel-comfy-sim`), built first if
/// needed, for tests that run another service as a real process. Services never depend on
/// each other's crates; their tests meet them as processes, the way production does.
///
/// The test command builds every binary before the tests start and says so with
/// `EASEL_TEST_BINARIES_BUILT=1`; then nothing is built here, so no test spends its time budget
/// compiling. Otherwise (a targeted `cargo nextest run -p …`) the whole workspace's binaries
/// are built once per test process, with the same feature set as the test build (`--tests`
/// turns on dev-dependency features): building one package alone would resolve other
/// features and recompile half the dependency tree next to the test build's copy.
pub fn workspace_binary(package: &str, binary: &str) -> std::path::PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);

    let exe = std::env::current_exe().unwrap_or_else(|error| panic!("no current exe: {error}"));
    // Test binaries live in target/<profile>/deps/.
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()))
        .to_path_buf();
    let path = profile_dir.join(binary);

    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let prebuilt = std::env::var_os("EASEL_TEST_BINARIES_BUILT").is_some();
    if !prebuilt && !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "--quiet", "--workspace", "--bins", "--tests"]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            command.arg("--release");
        }
        let status = command
            .status()
            .unwrap_or_else(|error| panic!("cannot run cargo to build {binary}: {error}"));
        assert!(status.success(), "building the workspace's binaries failed");
        *built = true;
    }
    assert!(
        path.exists(),
        "{} (package {package}) does not exist after building",
        path.display()
    );
    path
}
