//! Bulk actions as background jobs with progress (release, delete, delay, move of a
//! selection or of every result of a search, and Outbreak manage-by-rule).

use std::sync::Arc;

use axum::Router;

use crate::node::Shared;

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
}
