//! Network diagnostics run from the node: `telnet` and `tlsverify`.

use std::sync::Arc;

use crate::admin::{Request, Response};
use crate::node::Shared;

/// Handles a diagnostic command; `None` if `req.command` is not one.
pub async fn dispatch(_shared: &Arc<Shared>, _req: &Request) -> Option<Response> {
    None
}
