//! Why a platform did not start, or stopped.

use std::path::PathBuf;

/// Why a platform did not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A directory could not be made or resolved.
    #[error("cannot prepare the directory {}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A port or socket could not be bound.
    #[error("cannot listen on {what}")]
    Listen {
        /// The address or socket path.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A service's variables are invalid.
    #[error("{service} configuration")]
    Config {
        /// The service.
        service: &'static str,
        /// Every problem.
        source: easel_runtime::config::ConfigError,
    },
    /// The development account could not be made.
    #[error("cannot create the development account")]
    DevAccount {
        /// Why.
        source: easel_auth::BootstrapError,
    },
    /// A service (or the simulator) ended with an error.
    #[error("{name} failed")]
    Failed {
        /// The service.
        name: &'static str,
        /// Its error.
        source: std::io::Error,
    },
    /// A service ended before the shutdown.
    #[error("{name} stopped unexpectedly")]
    Stopped {
        /// The service.
        name: &'static str,
    },
}
