//! Gateway configuration: embedded defaults, overridden by flags or `CUSTODIA_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the gateway keeps its state and how it names its log.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Directory for keys, the custody log and (later) artefacts and the database.
    #[arg(long, env = "CUSTODIA_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The log's origin: its URL prefix without a scheme. It is also the name of the signing key.
    #[arg(long, env = "CUSTODIA_ORIGIN", default_value = "custodia.localhost/log")]
    pub origin: String,
}

impl GatewayConfig {
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("keys").join("gateway.key")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }
}

/// Settings for `custodia serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub gateway: GatewayConfig,
    /// Address to listen on. The default is loopback only.
    #[arg(long, env = "CUSTODIA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// Resolves `path` against the current directory, for messages that must say exactly where a file is.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
