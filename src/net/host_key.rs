//! The node's SSH host key (ed25519, `DATA_DIR/ssh/`), made at the first start. The
//! SSH server presents it, and a manager logs into its gateways with it (their
//! `applianceconfig` installs it for the gateway's user), so both take it from here
//! rather than from each other.

use std::path::Path;

use anyhow::{Context, Result};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// The file name of the host key (and, with `.pub`, of its public half).
pub const HOST_KEY: &str = "ssh_host_ed25519_key";

/// Loads the host key, generating it at the first start.
pub fn host_key(dir: &Path) -> Result<PrivateKey> {
    let path = dir.join(HOST_KEY);
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes())
            .with_context(|| format!("{} is not an OpenSSH private key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut seed = [0u8; 32];
            crate::core::users::random_bytes(&mut seed);
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| anyhow::anyhow!("encoding the SSH host key: {e}"))?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| anyhow::anyhow!("encoding the SSH host key: {e}"))?;
            crate::core::atomic_file::write_private(
                &dir.join(format!("{HOST_KEY}.pub")),
                format!("{public}\n").as_bytes(),
            )?;
            crate::core::atomic_file::write_private(&path, pem.as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
