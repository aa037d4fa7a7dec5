//! The appliance command set, executed inside the node.
//!
//! `dispatch_as` is the one way in — the admin socket, SSH and (later) the REST API all
//! call it with the caller's [`Identity`]: it checks the role against the table in
//! `access` before any handler runs, runs the handler, and records what the audit trail
//! must know. Handlers build the appliance wording (`text`) and the same facts as JSON
//! (`data`) together, so scripts and people read the same answer.

pub mod access;
mod config_cmds;
mod diag_cmds;
mod pvo_cmds;
pub mod quarantine_cmds;
mod queue_cmds;
pub mod replies;
mod status;
mod user_cmds;

use std::sync::Arc;

use crate::admin::{Request, Response};
use crate::node::Shared;
use crate::users::{Identity, Origin};

/// A request from the admin socket: its owner is the local superuser `admin`, unless the
/// request carries credentials (`pvo --user NAME`), which are checked first.
pub async fn dispatch(shared: &Arc<Shared>, mut req: Request) -> Response {
    let Some(auth) = req.auth.take() else {
        // The OS user stays the name in the commit history, as before users existed.
        let os_user = std::mem::take(&mut req.user);
        return run_as(shared, req, &Identity::local_admin(), Some(os_user)).await;
    };
    match login(
        shared,
        &auth.user,
        &auth.password,
        Origin::Local,
        "password",
    )
    .await
    {
        Ok(id) => dispatch_as(shared, req, &id).await,
        Err(refused) => Response::error(refused.text),
    }
}

/// A refused password login: the text for the caller, and the throttle's answer when
/// the password was not even checked.
#[derive(Debug)]
pub struct LoginRefused {
    pub text: String,
    pub throttled: Option<crate::login_throttle::Throttled>,
}

/// Checks a password on the blocking pool, unless the account or the address has failed
/// too often lately (`crate::login_throttle`, the same for every channel). A failure is
/// counted, audited and answered without saying whether the user or the password was
/// wrong; a throttled attempt is audited too, and the start of a lockout is logged.
/// `method` names the channel's way of logging in for the audit trail.
pub async fn login(
    shared: &Arc<Shared>,
    user: &str,
    password: &str,
    from: Origin,
    method: &str,
) -> Result<Identity, LoginRefused> {
    let source = crate::login_throttle::Source::from(&from);
    if let Err(t) = shared.logins.check(user, source) {
        audit_login_failure(shared, user, &from, method, &format!("throttled: {t}")).await;
        return Err(LoginRefused {
            text: format!("Login as {user:?} refused: {t}."),
            throttled: Some(t),
        });
    }
    let (s, u, p, f) = (
        shared.clone(),
        user.to_string(),
        password.to_string(),
        from.clone(),
    );
    let r = tokio::task::spawn_blocking(move || s.users.login_password(&u, &p, f))
        .await
        .map_err(|e| LoginRefused {
            text: format!("login failed inside the node: {e}"),
            throttled: None,
        })?;
    match r {
        Ok(id) => {
            shared.logins.succeeded(user, source);
            Ok(id)
        }
        Err(failed) => {
            shared.logins.failed(user, source);
            audit_login_failure(shared, user, &from, method, failed.why).await;
            if let Err(t) = shared.logins.check(user, source) {
                shared.log.warning(format!(
                    "Login throttled: user {user:?} from {from}: {t} (further attempts are refused without checking the password)"
                ));
            }
            Err(LoginRefused {
                text: format!("Login as {user:?} refused: {failed}."),
                throttled: None,
            })
        }
    }
}

/// Records a successful login (`method`: password, publickey...).
pub async fn audit_login_success(shared: &Arc<Shared>, id: &Identity, method: &str) {
    let entry = crate::audit::Entry {
        id: 0,
        at: 0,
        user: id.user.clone(),
        role: id.role.clone(),
        from: id.from.to_string(),
        action: "login".into(),
        command: format!("login ({method})"),
        quarantine: None,
        mids: Vec::new(),
        outcome: "ok".into(),
        detail: String::new(),
    };
    shared.audit.record(entry, &shared.log).await;
}

/// Records a refused login.
pub async fn audit_login_failure(
    shared: &Arc<Shared>,
    user: &str,
    from: &Origin,
    method: &str,
    why: &str,
) {
    let entry = crate::audit::Entry {
        id: 0,
        at: 0,
        user: user.to_string(),
        role: String::new(),
        from: from.to_string(),
        action: "login".into(),
        command: format!("login ({method})"),
        quarantine: None,
        mids: Vec::new(),
        outcome: "failed".into(),
        detail: why.to_string(),
    };
    shared.audit.record(entry, &shared.log).await;
}

/// Runs `req` as `id`: the role check, the handler, the audit trail.
pub async fn dispatch_as(shared: &Arc<Shared>, req: Request, id: &Identity) -> Response {
    run_as(shared, req, id, None).await
}

/// `dispatch_as`; `os_user` is the local OS user of an admin-socket caller acting as the
/// local superuser, kept as the request's user and noted in the audit trail.
async fn run_as(
    shared: &Arc<Shared>,
    mut req: Request,
    id: &Identity,
    os_user: Option<String>,
) -> Response {
    let os_user = os_user.filter(|u| !u.is_empty() && *u != id.user);
    req.user = os_user.clone().unwrap_or_else(|| id.user.clone());
    let from = match &os_user {
        Some(u) => format!("{} (OS user {u})", id.from),
        None => id.from.to_string(),
    };
    let need = access::required(&req.command, &req.args, &id.user);
    let role = shared.users.role(&id.role);
    let audited = access::audit_action(&req.command, &req.args, need);
    let resp = match access::check(need, id, role.as_ref()) {
        Err(text) => {
            let resp = Response::fail(crate::admin::ErrorKind::Forbidden, text);
            audit(
                shared,
                &req,
                id,
                &from,
                audited.unwrap_or_else(|| req.command.clone()),
                "refused",
                &resp,
            )
            .await;
            return resp;
        }
        Ok(()) => run(shared, &req, id).await,
    };
    if let Some(action) = audited {
        let outcome = if resp.ok { "ok" } else { "error" };
        audit(shared, &req, id, &from, action, outcome, &resp).await;
    }
    resp
}

async fn audit(
    shared: &Arc<Shared>,
    req: &Request,
    id: &Identity,
    from: &str,
    action: String,
    outcome: &str,
    resp: &Response,
) {
    let sub = arg_str(&req.args, "action");
    let entry = crate::audit::Entry {
        id: 0,
        at: 0,
        user: id.user.clone(),
        role: id.role.clone(),
        from: from.to_string(),
        action,
        command: match sub {
            Some(a) => format!("{} {a}", req.command),
            None => req.command.clone(),
        },
        quarantine: access::quarantine_of(&req.args),
        mids: access::mids_of(&req.args, resp),
        outcome: outcome.to_string(),
        detail: access::detail_of(&req.command, &req.args, resp),
    };
    shared.audit.record(entry, &shared.log).await;
}

async fn run(shared: &Arc<Shared>, req: &Request, id: &Identity) -> Response {
    let req = req.clone();
    if let Some(r) = config_cmds::dispatch(shared, &req).await {
        return r;
    }
    if let Some(r) = diag_cmds::dispatch(shared, &req).await {
        return r;
    }
    if let Some(r) = quarantine_cmds::dispatch(shared, &req, id).await {
        return r;
    }
    if let Some(r) = user_cmds::dispatch(shared, &req, id).await {
        return r;
    }
    if let Some(r) = pvo_cmds::dispatch(shared, &req, id).await {
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
