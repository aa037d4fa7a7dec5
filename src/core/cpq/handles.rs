//! The handles the CPQ services receive: the gateway's and the manager's sides, the
//! migration, the gateways' view, and the quarantine service they share with the
//! scanning pipeline. Its own module: `cpq` itself holds the CPQ state that `state`
//! imports, so it does not import `state` back.

use std::sync::Arc;

use crate::core::state::{ConfigHandle, CpqHandle, MailHandle, ScanHandle};

/// The handles of the CPQ services and of the quarantine service they share with the
/// scanning pipeline (`gateway`, `manager`, `migrate`, `scanning::local_quarantine`):
/// the configuration, the mail path, the scanning and quarantine store, and the CPQ
/// state with its links. `node` builds it; the commands take it from their context.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    pub scan: Arc<ScanHandle>,
    pub cpq: Arc<CpqHandle>,
}
