//! Workspace binaries for tests that run a service as a real process.

use std::sync::Mutex;

/// The path of a workspace binary (e.g. `easel-storage`, `easel-comfy-sim`), built first if
/// needed, for tests that run another service as a real process. Services never depend on
/// each other's crates; their tests meet them as processes, the way production does.
pub fn workspace_binary(package: &str, binary: &str) -> std::path::PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

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
    if !built.iter().any(|name| name == binary) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "--quiet", "-p", package, "--bin", binary]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            command.arg("--release");
        }
        let status = command
            .status()
            .unwrap_or_else(|error| panic!("cannot run cargo to build {binary}: {error}"));
        assert!(status.success(), "building {binary} failed");
        built.push(binary.to_string());
    }
    assert!(
        path.exists(),
        "{} does not exist after building",
        path.display()
    );
    path
}
