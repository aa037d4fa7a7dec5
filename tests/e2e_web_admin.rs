//! Web UI in headless Chromium: centralized services, gateways and their state, users and roles.
