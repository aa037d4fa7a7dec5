//! The appliance command set, executed inside the node.
//!
//! `dispatch` maps a command name to its handler. Handlers build the
//! appliance wording (`text`) and the same facts as JSON (`data`) together, so
//! scripts and people read the same answer.

mod config_cmds;
mod diag_cmds;
mod quarantine_cmds;
mod queue_cmds;
mod status;

use std::sync::Arc;

use crate::admin::{Request, Response};
use crate::node::Shared;

pub async fn dispatch(shared: &Arc<Shared>, req: Request) -> Response {
    if let Some(r) = config_cmds::dispatch(shared, &req).await {
        return r;
    }
    if let Some(r) = diag_cmds::dispatch(shared, &req).await {
        return r;
    }
    if let Some(r) = quarantine_cmds::dispatch(shared, &req).await {
        return r;
    }
    let args = &req.args;
    match req.command.as_str() {
        "status" => status::status(shared, args).await,
        "suspend" => status::suspend(shared, args).await,
        "resume" => status::resume(shared).await,
        "suspendlisteners" => status::suspend_listeners(shared, args),
        "resumelisteners" => status::resume_listeners(shared, args),
        "resetcounters" => status::reset_counters(shared),
        "suspenddel" => status::suspend_delivery(shared, true).await,
        "resumedel" => status::suspend_delivery(shared, false).await,
        "tophosts" => queue_cmds::tophosts(shared, args).await,
        "hoststatus" => queue_cmds::hoststatus(shared, args).await,
        "showrecipients" => queue_cmds::showrecipients(shared, args).await,
        "deleterecipients" => queue_cmds::deleterecipients(shared, args).await,
        "redirectrecipients" => queue_cmds::redirectrecipients(shared, args).await,
        "bouncerecipients" => queue_cmds::bouncerecipients(shared, args).await,
        "delivernow" => queue_cmds::delivernow(shared, args).await,
        other => Response::error(format!("Unknown command: {other}")),
    }
}

/// A string argument.
pub fn arg_str<'a>(args: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    args.get(key)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

pub fn arg_u64(args: &serde_json::Value, key: &str) -> Option<u64> {
    args.get(key).and_then(|v| v.as_u64())
}

pub fn arg_bool(args: &serde_json::Value, key: &str) -> bool {
    args.get(key).and_then(|v| v.as_bool()).unwrap_or(false)
}
