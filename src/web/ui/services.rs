//! Centralized services (manager): the gateways with their live state, adding,
//! testing, editing and removing gateways (`applianceconfig`), and the PVO service.

use std::sync::Arc;

use axum::Router;

use crate::node::Shared;

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
}
