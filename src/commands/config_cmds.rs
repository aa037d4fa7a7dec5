//! Configuration commands (owned by the config-store work): pending changes,
//! `commit`, `rollback`, `clearchanges`, `showconfig`, `commitdetail`, and the
//! editors `deliveryconfig`, `sslconfig`, `interfaceconfig`, `listenerconfig`,
//! `smtproutes`.

use std::sync::Arc;

use crate::admin::{Request, Response};
use crate::node::Shared;

/// Handles a configuration command; `None` if `req.command` is not one.
pub async fn dispatch(_shared: &Arc<Shared>, _req: &Request) -> Option<Response> {
    None
}
