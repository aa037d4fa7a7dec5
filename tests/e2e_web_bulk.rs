//! Web UI in headless Chromium: bulk actions with progress, and the REST API bulk endpoints.
