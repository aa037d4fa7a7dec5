//! Delivery status: the queue's destinations (`tophosts`), one host's status
//! (`hoststatus`) and "deliver now".

use std::sync::Arc;

use axum::Router;

use crate::node::Shared;

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
}
