//! The node side of the admin channel: a unix socket, one request per line.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::commands::protocol::{socket_path, RawRequest, Request, Response};
use crate::core::state::Handles;

/// Binds `run/admin.sock` (replacing a stale one) and serves it.
pub fn start(shared: Arc<Handles>) -> Result<()> {
    let path = socket_path(&shared.config.current().data_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        anyhow::bail!("another PVO node is already running with this data directory (its admin socket {} answers)", path.display());
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding the admin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let resp = match serde_json::from_str::<RawRequest>(&line) {
                        Ok(raw) => match Request::try_from(raw) {
                            Ok(req) => crate::commands::dispatch(&shared, req).await,
                            Err(e) => Response::from(e),
                        },
                        Err(e) => Response::error(format!("malformed admin request: {e}")),
                    };
                    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
                    out.push(b'\n');
                    if w.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}
