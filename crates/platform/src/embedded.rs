//! The platform on a data directory, as `easel up` runs it: SQLite databases and a local
//! artifact directory under it, the internal services on Unix sockets in an owner-only
//! directory there, the in-process queue unless `REDIS_URL` is set, and the simulator unless
//! `EASEL_COMFYUI_URLS` is set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::PlatformError;
use crate::settings::{Comfyui, InternalPorts, Service, Settings};

/// The development account of the embedded platform.
pub const DEV_EMAIL: &str = "dev@easel.local";

impl Settings {
    /// `easel up`'s platform on `data_dir` (created if missing), the gateway on `listen`,
    /// every service reading `process_env` under its embedded values. Returns the settings and
    /// the data directory's absolute path.
    pub fn embedded(
        data_dir: &Path,
        listen: SocketAddr,
        grace: Duration,
        process_env: HashMap<String, String>,
    ) -> Result<(Settings, PathBuf), PlatformError> {
        let data_dir = prepare_data_dir(data_dir)?;
        let redis_url = process_env
            .get("EASEL_REDIS_URL")
            .or_else(|| process_env.get("REDIS_URL"))
            .cloned();
        let comfyui = match process_env.get("EASEL_COMFYUI_URLS") {
            Some(urls) if !urls.trim().is_empty() => Comfyui::Backends(urls.clone()),
            // Request fault markers stay off (the default): they travel in users' prompts.
            _ => Comfyui::Simulator(Box::new(easel_comfy_sim::SimConfig {
                output_dir: Some(data_dir.join("comfyui")),
                ..easel_comfy_sim::SimConfig::default()
            })),
        };
        let dev_key = process_env.get("EASEL_DEV_API_KEY").cloned();
        let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", data_dir.join(name).display());
        let mut settings = Settings {
            listen,
            internal: InternalPorts::UnixSockets(data_dir.join("sockets")),
            env: process_env,
            grace,
            // Links then keep the platform's one origin whatever address a client used.
            pin_public_url: true,
            ..Settings::loopback(comfyui)
        }
        .dev_account(DEV_EMAIL, dev_key)
        .set(Service::Auth, [("EASEL_DATABASE_URL", sqlite("auth.db"))])
        .set(
            Service::Storage,
            [
                ("EASEL_DATABASE_URL", sqlite("storage.db")),
                (
                    "EASEL_STORAGE_URL",
                    format!("file://{}", data_dir.join("artifacts").display()),
                ),
                ("EASEL_SIGNING_KEY", storage_signing_key(&data_dir)?),
            ],
        )
        .set(Service::Jobs, [("EASEL_DATABASE_URL", sqlite("jobs.db"))]);
        if let Some(redis) = redis_url {
            settings = settings.share("EASEL_REDIS_URL", redis);
        }
        Ok((settings, data_dir))
    }
}

fn prepare_data_dir(path: &Path) -> Result<PathBuf, PlatformError> {
    let directory = |source| PlatformError::Directory {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path.join("artifacts")).map_err(directory)?;
    std::fs::create_dir_all(path.join("comfyui")).map_err(directory)?;
    path.canonicalize().map_err(directory)
}

/// The local download links' HMAC key: random on first start, then kept, so links survive a
/// restart.
fn storage_signing_key(data_dir: &Path) -> Result<String, PlatformError> {
    let path = data_dir.join("signing.key");
    if let Ok(key) = std::fs::read_to_string(&path)
        && key.trim().len() >= 32
    {
        return Ok(key.trim().to_string());
    }
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, &key)
        .and_then(|()| easel_runtime::transport::listener::restrict(&path, 0o600))
        .map_err(|source| PlatformError::Write { path, source })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_holds_the_databases_artifacts_sockets_and_a_kept_signing_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let env = HashMap::from([("REDIS_URL".to_string(), "redis://127.0.0.1:1".to_string())]);
        let (settings, data_dir) =
            Settings::embedded(dir.path(), listen, Duration::from_secs(1), env.clone())
                .expect("embedded settings");
        assert!(data_dir.join("artifacts").is_dir());
        assert!(matches!(
            &settings.internal,
            InternalPorts::UnixSockets(path) if *path == data_dir.join("sockets")
        ));
        assert!(matches!(settings.comfyui, Comfyui::Simulator(_)));
        assert_eq!(
            settings.env.get("EASEL_REDIS_URL").map(String::as_str),
            Some("redis://127.0.0.1:1")
        );
        let key = |settings: &Settings| {
            settings.service_env[&Service::Storage]
                .iter()
                .find(|(name, _)| name == "EASEL_SIGNING_KEY")
                .map(|(_, value)| value.clone())
                .expect("a signing key")
        };
        let (again, _) = Settings::embedded(dir.path(), listen, Duration::from_secs(1), env)
            .expect("embedded settings");
        assert_eq!(key(&settings), key(&again), "the key is kept across starts");
    }
}
