//! Where each gateway said (over SSH, `pvoconfig status --json`) that released mail goes,
//! overriding the configured address; kept in `DATA_DIR/cpq/endpoints.json` and held in
//! `cpq::State`. Asking is `ssh_client`'s (the SSH client).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

/// Endpoints learned over SSH, overriding the configured ones.
#[derive(Default)]
pub struct Endpoints {
    map: Mutex<HashMap<String, (IpAddr, u16)>>,
    pub(crate) asked: Mutex<HashMap<String, std::time::Instant>>,
}

impl Endpoints {
    pub fn load(path: &std::path::Path) -> Endpoints {
        let map = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<HashMap<String, (IpAddr, u16)>>(&b).ok())
            .unwrap_or_default();
        Endpoints {
            map: Mutex::new(map),
            asked: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, gateway: &str) -> Option<(IpAddr, u16)> {
        self.map.lock().unwrap().get(gateway).copied()
    }

    /// Records where `gateway` said released mail goes, in memory and in `path`.
    pub(crate) fn set(&self, path: &Path, gateway: &str, ep: (IpAddr, u16)) {
        let snapshot = {
            let mut m = self.map.lock().unwrap();
            m.insert(gateway.to_string(), ep);
            m.clone()
        };
        if let Ok(bytes) = serde_json::to_vec(&snapshot) {
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            let _ = crate::core::atomic_file::write(path, &bytes);
        }
    }
}
