//! `easel up` as a new user runs it: one command starts the platform on its embedded defaults
//! (SQLite, a local artifact directory, the in-process queue, the simulator), `easel generate`
//! against it writes a PNG, Ctrl-C stops it cleanly, and a restart keeps the jobs.

use std::path::Path;
use std::process::Stdio;

use easel_e2e::image::png_size;
use easel_e2e::{DEADLINE, find_api_key};
use easel_test_support::workspace_binary;
use tokio::io::AsyncBufReadExt;

struct Up {
    child: tokio::process::Child,
    output: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
        .port()
}

/// Starts `easel up` and reads its output until the banner is complete.
async fn start_up(port: u16, data_dir: &Path) -> Up {
    let mut child = tokio::process::Command::new(workspace_binary("easel", "easel"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env_remove("EASEL_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("EASEL_COMFYUI_URLS")
        .env_remove("EASEL_DEV_API_KEY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start easel up: {error}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut output = Vec::new();
    let ready = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.contains("Ctrl-C stops everything");
            output.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(ready, "easel up did not come up:\n{}", output.join("\n"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Up { child, output }
}

impl Up {
    /// Sends SIGINT (Ctrl-C) and expects a clean exit.
    async fn interrupt(mut self) {
        let pid = self.child.id().unwrap_or_default();
        let status = tokio::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .await
            .unwrap_or_else(|error| panic!("cannot run kill: {error}"));
        assert!(status.success());
        let exit = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("easel up did not stop after Ctrl-C"))
            .unwrap_or_else(|error| panic!("wait failed: {error}"));
        assert_eq!(exit.code(), Some(0), "easel up exit status");
    }
}

async fn easel(url: &str, api_key: &str, args: &[&str]) -> std::process::Output {
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(workspace_binary("easel", "easel"))
            .args(args)
            .env("EASEL_URL", url)
            .env("EASEL_API_KEY", api_key)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("easel {args:?} did not finish"))
    .unwrap_or_else(|error| panic!("cannot run easel {args:?}: {error}"));
    assert!(
        output.status.success(),
        "easel {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The socket directory is 0700 and holds the four internal services' sockets, each 0600.
fn assert_owner_only_sockets(dir: &Path) {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir), 0o700, "the socket directory's mode");
    for service in ["auth", "jobs", "storage", "comfy-bridge"] {
        let socket = dir.join(format!("{service}.sock"));
        let kind = std::fs::metadata(&socket)
            .unwrap_or_else(|error| panic!("{}: {error}", socket.display()))
            .file_type();
        assert!(kind.is_socket(), "{} is a socket", socket.display());
        assert_eq!(mode(&socket), 0o600, "{}'s mode", socket.display());
    }
}

#[tokio::test]
async fn easel_up_runs_generate_stops_on_ctrl_c_and_keeps_jobs_across_restarts() {
    let data = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");

    let up = start_up(port, data.path()).await;
    let banner = up.output.join("\n");
    assert!(banner.contains(&url), "the banner shows the URL:\n{banner}");
    let api_key = find_api_key(&banner).unwrap_or_else(|| panic!("no API key:\n{banner}"));

    // The internal services listen on Unix sockets only their owner can reach: no TCP port
    // another local user could find and send a forged caller to.
    assert_owner_only_sockets(&data.path().join("sockets"));

    let image = data.path().join("lighthouse.png");
    let image_arg = image.display().to_string();
    easel(
        &url,
        &api_key,
        &[
            "generate",
            "a lighthouse at dusk",
            "--width",
            "256",
            "--height",
            "192",
            "--seed",
            "7",
            "-o",
            &image_arg,
        ],
    )
    .await;
    let bytes = std::fs::read(&image).unwrap_or_else(|error| panic!("no image written: {error}"));
    assert_eq!(png_size(&bytes), Ok((256, 192)));

    let listed = easel(&url, &api_key, &["--json", "jobs", "list"]).await;
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("JOB_STATUS_SUCCEEDED"), "{listed}");
    up.interrupt().await;

    // A restart on the same data directory keeps the job, and the key still works.
    let up = start_up(port, data.path()).await;
    let again = easel(&url, &api_key, &["--json", "jobs", "list"]).await;
    let again = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        again.contains("JOB_STATUS_SUCCEEDED"),
        "jobs after a restart: {again}"
    );
    assert!(data.path().join("artifacts").exists());
    up.interrupt().await;
}
