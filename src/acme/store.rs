//! `[tls.acme] state_dir`: the ACME account and the issued certificate, kept across restarts.
//!
//! - `account.json`: the account's URL, private key (PKCS#8) and directory, as instant-acme's
//!   `AccountCredentials` serializes them. Created once; a changed `directory` makes a new one.
//! - `cert.pem`: the issued chain, leaf first; `key.pem`: its private key (PKCS#8).
//!
//! The directory is created 0700 and every file written 0600 (the keys are secrets), each
//! through a temporary file renamed over the old one, so a reader (or a crash) never sees half a
//! file. The pair is two renames: a crash between them leaves a key that does not match the
//! certificate, which the next start treats as no certificate and orders a new one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;

use crate::tls::{pair_from_pem, Loaded, Source};

/// The account's file.
pub(super) const ACCOUNT: &str = "account.json";
/// The certificate chain's file.
pub(super) const CERT: &str = "cert.pem";
/// The private key's file.
pub(super) const KEY: &str = "key.pem";

/// An opened `state_dir`.
#[derive(Debug, Clone)]
pub(super) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates `dir` (0700) when missing; an existing one is made 0700 when teal may. The error
    /// names the directory and the reason.
    pub(super) fn open(dir: &Path) -> Result<StateDir, String> {
        let named = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(&named)?;
        let meta = std::fs::metadata(dir).map_err(named)?;
        if !meta.is_dir() {
            return Err(format!("{}: not a directory", dir.display()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                tracing::warn!(dir = %dir.display(), error = %e, "ACME state_dir is readable by others and cannot be made 0700");
            }
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The path of `name` in the directory.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The stored account, if any, with the directory URL it was created at. An unreadable or
    /// malformed file is an error naming it.
    pub(super) fn account(&self) -> Result<Option<(String, AccountCredentials)>, String> {
        let path = self.path(ACCOUNT);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        let bad = |e: serde_json::Error| format!("{}: not an ACME account: {e}", path.display());
        let value: serde_json::Value = serde_json::from_slice(&text).map_err(bad)?;
        let directory = value["directory"].as_str().unwrap_or_default().to_string();
        let credentials = serde_json::from_value(value).map_err(bad)?;
        Ok(Some((directory, credentials)))
    }

    /// Stores the account (0600).
    pub(super) fn save_account(&self, credentials: &AccountCredentials) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(credentials)
            .map_err(|e| format!("cannot serialize the ACME account: {e}"))?;
        self.write(ACCOUNT, &json)
    }

    /// The stored certificate, checked (PEM, key matching, not expired): `Ok(None)` when there
    /// is none, an error naming the file and the reason when it is unusable.
    pub(super) fn certificate(&self) -> Result<Option<Loaded>, String> {
        let (cert_path, key_path) = (self.path(CERT), self.path(KEY));
        let read = |path: &Path| match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
        };
        let (Some(cert), Some(key)) = (read(&cert_path)?, read(&key_path)?) else {
            return Ok(None);
        };
        pair_from_pem((&cert_path, &cert), (&key_path, &key), Source::Acme).map(Some)
    }

    /// Stores an issued chain and its key (0600 each), the key first.
    pub(super) fn save_certificate(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        self.write(KEY, key_pem.as_bytes())?;
        self.write(CERT, cert_pem.as_bytes())
    }

    /// Replaces `name` with `bytes` atomically: a temporary file (0600) written and synced, then
    /// renamed over it.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let path = self.path(name);
        let temp = self.path(&format!(".{name}.tmp"));
        let result = (|| {
            // A new file, never an existing one: a temporary file left behind, or a symlink
            // someone planted there, is removed rather than followed (opening a symlink with
            // truncate would overwrite its target with the key).
            match std::fs::remove_file(&temp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            // Exactly 0600 whatever the umask.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("{}: cannot write: {e}", path.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_directory_private_and_writes_files_private() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/acme");
        let store = StateDir::open(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        store.write("x", b"one").unwrap();
        store.write("x", b"two").unwrap();
        assert_eq!(std::fs::read(dir.join("x")).unwrap(), b"two");
        let mode = std::fs::metadata(dir.join("x"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join(".x.tmp").exists());
    }

    /// A symlink planted where the temporary file goes is replaced, not followed: its target
    /// keeps its content and the key lands in the state directory only.
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let top = tempfile::tempdir().unwrap();
        let victim = top.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let dir = top.path().join("acme");
        let store = StateDir::open(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".key.pem.tmp")).unwrap();
        store.write(KEY, b"secret key").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(dir.join(KEY)).unwrap();
        assert!(meta.is_file(), "key.pem is a symlink");
        assert_eq!(std::fs::read(dir.join(KEY)).unwrap(), b"secret key");
    }

    #[test]
    fn missing_files_are_none_and_bad_files_are_named() {
        let top = tempfile::tempdir().unwrap();
        let store = StateDir::open(top.path()).unwrap();
        assert!(store.account().unwrap().is_none());
        assert!(store.certificate().unwrap().is_none());
        std::fs::write(top.path().join(ACCOUNT), "{").unwrap();
        let Err(err) = store.account() else {
            panic!("a malformed account.json was accepted");
        };
        assert!(err.contains("account.json: not an ACME account"), "{err}");
        std::fs::write(top.path().join(CERT), "junk").unwrap();
        std::fs::write(top.path().join(KEY), "junk").unwrap();
        let err = store.certificate().unwrap_err();
        assert!(err.contains("cert.pem: no CERTIFICATE block"), "{err}");
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let file = top.path().join("acme");
        std::fs::write(&file, "").unwrap();
        let err = StateDir::open(&file).unwrap_err();
        assert!(err.contains("acme"), "{err}");
    }
}
