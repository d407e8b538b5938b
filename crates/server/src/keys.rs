//! The gateway's signing key on disk: made on first start, readable by its owner only.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use custodia_ledger::LogSigner;

/// Loads the key at `path`, or makes one named `origin` if there is none. The key's name must be `origin`.
pub fn load_or_create(path: &Path, origin: &str) -> anyhow::Result<(LogSigner, bool)> {
    if path.exists() {
        return load(path, origin).map(|signer| (signer, false));
    }
    let signer = LogSigner::generate(origin).with_context(|| format!("{origin:?} cannot name a signing key"))?;
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // create_new: two first starts racing must not overwrite each other's key.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    writeln!(file, "{}", signer.expose_secret()).and_then(|()| file.sync_all()).context("writing key file")?;
    Ok((signer, true))
}

pub fn load(path: &Path, origin: &str) -> anyhow::Result<LogSigner> {
    let mode = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("key file {} is readable by others (mode {:o}); run chmod 600 on it", path.display(), mode & 0o777);
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let signer = LogSigner::from_skey(&text).with_context(|| format!("{} is not a signer key", path.display()))?;
    if signer.name() != origin {
        bail!(
            "key file {} is for log {:?}, but the configured origin is {:?}; set CUSTODIA_ORIGIN to match",
            path.display(),
            signer.name(),
            origin
        );
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_owner_only_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/gateway.key");
        let (made, created) = load_or_create(&path, "custodia.test/log").unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = load_or_create(&path, "custodia.test/log").unwrap();
        assert!(!created);
        assert_eq!(made.verifier().to_string(), again.verifier().to_string());
        assert!(load(&path, "other.test/log").is_err());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path, "custodia.test/log").unwrap_err().to_string().contains("readable by others"));
    }
}
