//! The admin token: taken from `HERALD_ADMIN_TOKEN`, or generated once into the data
//! directory.
//!
//! A generated token is written to `<data-dir>/admin-token` with mode 0600, created
//! exclusively so two starting processes cannot both write one, and returned so the
//! caller can print it that one time. Later starts read the file silently.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use herald_core::auth::{ADMIN_TOKEN_PREFIX, KeyHash, NewCredential};

/// The file, inside the data directory, that holds a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The admin token in force.
pub struct AdminToken {
    /// Its hash, compared with presented credentials.
    pub hash: KeyHash,
    /// The plaintext and its file, when this start generated it (to show once).
    pub generated: Option<(String, PathBuf)>,
}

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} the admin token file {}", path.display())]
pub struct AdminTokenError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// The configured token, else the one stored in `data_dir`, else a new one.
pub fn ensure(configured: Option<&str>, data_dir: &Path) -> Result<AdminToken, AdminTokenError> {
    if let Some(token) = configured {
        return Ok(AdminToken {
            hash: KeyHash::of(token),
            generated: None,
        });
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(stored) => Ok(AdminToken {
            hash: KeyHash::of(stored.trim()),
            generated: None,
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => generate(path),
        Err(source) => Err(AdminTokenError {
            action: "read",
            path,
            source,
        }),
    }
}

fn generate(path: PathBuf) -> Result<AdminToken, AdminTokenError> {
    let credential = NewCredential::generate(ADMIN_TOKEN_PREFIX);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(credential.plaintext.as_bytes())?;
            file.sync_all()
        });
    match written {
        Ok(()) => Ok(AdminToken {
            hash: credential.hash,
            generated: Some((credential.plaintext, path)),
        }),
        Err(source) => Err(AdminTokenError {
            action: "write",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_generated_token_is_stored_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure(None, dir.path()).expect("generated");
        let (plaintext, path) = first.generated.expect("generated on first start");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = ensure(None, dir.path()).expect("read back");
        assert!(second.generated.is_none(), "printed only once");
        assert_eq!(second.hash, KeyHash::of(&plaintext));
    }

    #[test]
    fn a_configured_token_wins_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = ensure(Some("configured-admin-token"), dir.path()).expect("configured");
        assert_eq!(token.hash, KeyHash::of("configured-admin-token"));
        assert!(!dir.path().join(ADMIN_TOKEN_FILE).exists());
    }
}
