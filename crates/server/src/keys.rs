//! The gateway's keys on disk (the log's signing key, the witness's cosigner key, the key that signs requests to
//! partner gateways, the device cookies' MAC key): made on first start, or by `custodia keygen`, readable by their
//! owner only.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use custodia_ledger::LogSigner;
use custodia_witness::CosignerKey;

use crate::config::GatewayConfig;

/// Every key a gateway makes on first start, made now where there is none, and the log's signer: what several
/// gateways of one log must share (`custodia keygen`). Each key file is listed with whether it was made.
pub fn load_or_create_every_key(
    gateway: &GatewayConfig,
    witness_name: &str,
) -> anyhow::Result<(LogSigner, Vec<(PathBuf, bool)>)> {
    let (signer, log_key_made) = load_or_create(&gateway.key_file(), &gateway.origin)?;
    let (_, witness_key_made) = load_or_create_witness(&gateway.witness_key_file(), witness_name)?;
    let (_, request_key_made) = load_or_create_secret(&gateway.partner_request_key_file())?;
    let (_, device_key_made) = load_or_create_secret(&gateway.device_key_file())?;
    let files = vec![
        (gateway.key_file(), log_key_made),
        (gateway.witness_key_file(), witness_key_made),
        (gateway.partner_request_key_file(), request_key_made),
        (gateway.device_key_file(), device_key_made),
    ];
    Ok((signer, files))
}

/// Loads the key at `path`, or makes one named `origin` if there is none. The key's name must be `origin`.
pub fn load_or_create(path: &Path, origin: &str) -> anyhow::Result<(LogSigner, bool)> {
    if path.exists() {
        return load(path, origin).map(|signer| (signer, false));
    }
    let signer = LogSigner::generate(origin).with_context(|| format!("{origin:?} cannot name a signing key"))?;
    write_new(path, signer.expose_secret())?;
    Ok((signer, true))
}

/// Loads the witness's cosigner key at `path`, or makes one named `name`. Its name must be `name`.
pub fn load_or_create_witness(path: &Path, name: &str) -> anyhow::Result<(CosignerKey, bool)> {
    if path.exists() {
        let key = CosignerKey::from_skey(&read_owner_only(path)?)
            .with_context(|| format!("{} is not a cosigner key", path.display()))?;
        if key.name() != name {
            bail!(
                "key file {} is for witness {:?}, but the configured name is {:?}; set CUSTODIA_WITNESS_NAME to match",
                path.display(),
                key.name(),
                name
            );
        }
        return Ok((key, false));
    }
    let key = CosignerKey::generate(name).with_context(|| format!("{name:?} cannot name a witness key"))?;
    write_new(path, &key.expose_secret())?;
    Ok((key, true))
}

/// Loads the 256-bit secret at `path` (base64url, as [`custodia_service::identity::new_secret`] writes one), or makes one if there
/// is none: a key for a MAC, which only this gateway uses, so it has no name.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<([u8; 32], bool)> {
    use base64::Engine as _;
    let (text, created) = if path.exists() {
        (read_owner_only(path)?, false)
    } else {
        let secret = custodia_service::identity::new_secret();
        write_new(path, &secret)?;
        (secret, true)
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .with_context(|| format!("{} is not a 256-bit secret in base64url", path.display()))?;
    Ok((bytes, created))
}

/// Writes a new owner-only key file, in an owner-only directory, atomically: the key is written and synced to a
/// temporary file beside it, which is then linked to `path`, so a crash leaves either no key file or a whole one,
/// never an empty one (which would stop every later start). Linking fails if `path` exists: two first starts racing
/// must not overwrite each other's key.
fn write_new(path: &Path, secret: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let temporary = dir.join(format!(".{}.{}.new", name.to_string_lossy(), custodia_service::identity::new_secret()));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("creating key file {}", temporary.display()))?;
        writeln!(file, "{secret}").and_then(|()| file.sync_all()).context("writing key file")?;
        fs::hard_link(&temporary, path).with_context(|| format!("creating key file {}", path.display()))?;
        fs::File::open(dir).and_then(|dir| dir.sync_all()).with_context(|| format!("syncing {}", dir.display()))
    })();
    let removed = fs::remove_file(&temporary);
    written?;
    removed.with_context(|| format!("removing {}", temporary.display()))
}

/// A key file's text, refused if others may read it.
fn read_owner_only(path: &Path) -> anyhow::Result<String> {
    let mode = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("key file {} is readable by others (mode {:o}); run chmod 600 on it", path.display(), mode & 0o777);
    }
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn load(path: &Path, origin: &str) -> anyhow::Result<LogSigner> {
    let text = read_owner_only(path)?;
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

    #[test]
    fn a_secret_is_made_once_owner_only_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/device-cookie.key");
        let (made, created) = load_or_create_secret(&path).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let (again, created) = load_or_create_secret(&path).unwrap();
        assert!(!created);
        assert_eq!(made, again);
        assert_ne!(made, load_or_create_secret(&dir.path().join("keys/other.key")).unwrap().0);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_secret(&path).unwrap_err().to_string().contains("readable by others"));
        let short = dir.path().join("keys/short.key");
        fs::write(&short, "c2hvcnQ\n").unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create_secret(&short).unwrap_err().to_string().contains("not a 256-bit secret"));
    }

    #[test]
    fn a_key_file_appears_whole_or_not_at_all_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/device-cookie.key");
        write_new(&path, "first").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_new(&path, "second").is_err(), "an existing key is kept");
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\n");
        let left: Vec<_> =
            fs::read_dir(path.parent().unwrap()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("device-cookie.key")], "no temporary file is left");
    }

    #[test]
    fn the_witness_key_is_its_own_and_keeps_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/witness.key");
        let (made, created) = load_or_create_witness(&path, "custodia.test/witness").unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = load_or_create_witness(&path, "custodia.test/witness").unwrap();
        assert!(!created);
        assert_eq!(made.verifier(), again.verifier());
        assert!(load_or_create_witness(&path, "other.test/witness").is_err());
        // A log key is not a cosigner key.
        let log_key = dir.path().join("keys/gateway.key");
        load_or_create(&log_key, "custodia.test/log").unwrap();
        assert!(load_or_create_witness(&log_key, "custodia.test/log").is_err());
    }
}
