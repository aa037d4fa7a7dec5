//! The appliance command set, executed inside the node.
//!
//! `dispatch_as` is the one way in — the admin socket, SSH, the web UI and the REST API
//! all call it with a typed [`command::Command`] and the caller's [`Identity`]: it
//! checks the role against the table in `access` before any handler runs, runs the handler, and records what the audit trail
//! must know. Handlers build the appliance wording (`text`) and the same facts as JSON
//! (`data`) together, so scripts and people read the same answer.

pub mod access;
mod cluster_cmds;
pub mod command;
mod config_cmds;
mod feature_cmds;
pub mod protocol;
mod pvo_cmds;
pub mod quarantine_cmds;
mod queue_cmds;
pub mod replies;
mod status;
mod user_cmds;

use std::sync::Arc;

use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::core::state::Handles;
use crate::core::users::{Identity, Origin};
use command::Command;

/// A request from the admin socket: its owner is the local superuser `admin`, unless the
/// request carries credentials (`pvo --user NAME`), which are checked first.
pub async fn dispatch(shared: &Arc<Handles>, mut req: Request) -> Response {
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
        Err(refused) => {
            let kind = match refused.throttled {
                Some(_) => ErrorKind::Busy,
                None => ErrorKind::Forbidden,
            };
            Response::fail(kind, refused.text)
        }
    }
}

/// A refused password login: the text for the caller, and the throttle's answer when
/// the password was not even checked.
#[derive(Debug)]
pub struct LoginRefused {
    pub text: String,
    pub throttled: Option<crate::core::login_throttle::Throttled>,
    /// What the SSH server tells the client as its disconnect reason (a join token's
    /// refusal: its holder proved the secret, so it may learn why).
    pub tell: Option<String>,
}

/// Checks a password on the blocking pool, unless the account or the address has failed
/// too often lately (`crate::core::login_throttle`, the same for every channel). A failure is
/// counted, audited and answered without saying whether the user or the password was
/// wrong; a throttled attempt is audited too, and the start of a lockout is logged.
/// `method` names the channel's way of logging in for the audit trail.
pub async fn login(
    shared: &Arc<Handles>,
    user: &str,
    password: &str,
    from: Origin,
    method: &str,
) -> Result<Identity, LoginRefused> {
    let source = crate::core::login_throttle::Source::from(&from);
    if let Err(t) = shared.access.logins.check(user, source) {
        audit_login_failure(shared, user, &from, method, &format!("throttled: {t}")).await;
        return Err(LoginRefused {
            text: format!("Login as {user:?} refused: {t}."),
            throttled: Some(t),
            tell: None,
        });
    }
    let (s, u, p, f) = (
        shared.clone(),
        user.to_string(),
        password.to_string(),
        from.clone(),
    );
    let r = tokio::task::spawn_blocking(move || s.access.users.login_password(&u, &p, f))
        .await
        .map_err(|e| LoginRefused {
            text: format!("login failed inside the node: {e}"),
            throttled: None,
            tell: None,
        })?;
    match r {
        Ok(id) => {
            shared.access.logins.succeeded(user, source);
            Ok(id)
        }
        Err(failed) => {
            shared.access.logins.failed(user, source);
            audit_login_failure(shared, user, &from, method, failed.why).await;
            if let Err(t) = shared.access.logins.check(user, source) {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::LoginThrottled {
                        user,
                        from: &from,
                        throttle: &t,
                    });
            }
            Err(LoginRefused {
                text: format!("Login as {user:?} refused: {failed}."),
                throttled: None,
                tell: None,
            })
        }
    }
}

/// The SSH login of a joining machine: user [`JOIN_USER`](crate::core::users::JOIN_USER)
/// with a join token's secret (base64url) as the password. The secret must hash to a
/// token of this member's cluster that works now; a wrong one is counted, audited and
/// throttled like a wrong password, and the answer never says which part was wrong.
pub async fn login_join_token(
    shared: &Arc<Handles>,
    secret: &str,
    peer: std::net::SocketAddr,
) -> Result<Identity, LoginRefused> {
    use crate::core::users::JOIN_USER;
    let from = Origin::Ssh(peer);
    let source = crate::core::login_throttle::Source::from(&from);
    let method = "ssh join token";
    if let Err(t) = shared.access.logins.check(JOIN_USER, source) {
        audit_login_failure(shared, JOIN_USER, &from, method, &format!("throttled: {t}")).await;
        return Err(LoginRefused {
            text: format!("Login as {JOIN_USER:?} refused: {t}."),
            throttled: Some(t),
            tell: None,
        });
    }
    use base64::Engine;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    // (why, for the audit trail and the log; what the client is told)
    let unknown = "not a join token of this cluster";
    let checked = match decoded {
        None => Err(("not a join token's secret".to_string(), unknown.to_string())),
        Some(secret) => {
            let hash = crate::core::cluster::store::token_hash(&secret);
            match shared.cluster.store() {
                Err(e) => {
                    let why = format!("the cluster's store cannot be asked: {e}");
                    Err((why.clone(), why))
                }
                Ok(store) => match store.check_token(&hash).await {
                    Ok(()) => Ok(hash),
                    Err(crate::core::cluster::store::StoreError::Token(
                        crate::core::cluster::store::TokenRefused::Unknown,
                    )) => Err((unknown.to_string(), unknown.to_string())),
                    // The secret is right: its holder may learn why it no longer works.
                    Err(e) => Err((e.to_string(), e.to_string())),
                },
            }
        }
    };
    match checked {
        Ok(token) => {
            shared.access.logins.succeeded(JOIN_USER, source);
            shared
                .mail
                .log
                .emit(crate::core::events::Event::JoinTokenLogin {
                    token: &token[..8],
                    from: &peer,
                });
            Ok(Identity {
                user: JOIN_USER.to_string(),
                role: crate::core::users::RoleDef::Joiner.name().to_string(),
                domains: Vec::new(),
                from: Origin::JoinToken { peer, token },
            })
        }
        Err((why, tell)) => {
            shared.access.logins.failed(JOIN_USER, source);
            audit_login_failure(shared, JOIN_USER, &from, method, &why).await;
            shared
                .mail
                .log
                .emit(crate::core::events::Event::JoinTokenRefused {
                    what: &format!("an SSH login from {peer}"),
                    why: &why,
                });
            if let Err(t) = shared.access.logins.check(JOIN_USER, source) {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::LoginThrottled {
                        user: JOIN_USER,
                        from: &from,
                        throttle: &t,
                    });
            }
            Err(LoginRefused {
                text: format!("Login as {JOIN_USER:?} refused: {tell}."),
                throttled: None,
                tell: Some(format!("the join token was refused: {tell}")),
            })
        }
    }
}

/// Records a successful login (`method`: password, publickey...).
pub async fn audit_login_success(shared: &Arc<Handles>, id: &Identity, method: &str) {
    let entry = crate::core::audit::Entry {
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
    shared.access.audit.record(entry, &shared.mail.log).await;
}

/// Records a refused login.
pub async fn audit_login_failure(
    shared: &Arc<Handles>,
    user: &str,
    from: &Origin,
    method: &str,
    why: &str,
) {
    let entry = crate::core::audit::Entry {
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
    shared.access.audit.record(entry, &shared.mail.log).await;
}

/// Runs `req` as `id`: the role check, the handler, the audit trail.
pub async fn dispatch_as(shared: &Arc<Handles>, req: Request, id: &Identity) -> Response {
    run_as(shared, req, id, None).await
}

/// `dispatch_as`; `os_user` is the local OS user of an admin-socket caller acting as the
/// local superuser, kept as the request's user and noted in the audit trail.
async fn run_as(
    shared: &Arc<Handles>,
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
    let need = access::required(&req.command, &id.user);
    // A joining machine's identity is its origin (made only by the SSH server's token
    // login), never a stored user's role.
    let role = match &id.from {
        Origin::JoinToken { .. } => Some(crate::core::users::RoleDef::Joiner),
        _ => shared.access.users.role(&id.role),
    };
    let audited = access::audit_action(&req.command, need);
    let resp = match access::check(need, id, role.as_ref()) {
        Err(text) => {
            let resp = Response::fail(ErrorKind::Forbidden, text);
            audit(
                shared,
                &req,
                id,
                &from,
                audited.unwrap_or_else(|| req.command.name()),
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
    shared: &Arc<Handles>,
    req: &Request,
    id: &Identity,
    from: &str,
    action: String,
    outcome: &str,
    resp: &Response,
) {
    let entry = crate::core::audit::Entry {
        id: 0,
        at: 0,
        user: id.user.clone(),
        role: id.role.clone(),
        from: from.to_string(),
        action,
        command: access::audit_command(&req.command),
        quarantine: access::quarantine_of(&req.command),
        mids: access::mids_of(&req.command, resp),
        outcome: outcome.to_string(),
        detail: access::detail_of(&req.command, resp),
    };
    shared.access.audit.record(entry, &shared.mail.log).await;
}

/// Runs the handler of the command: the one place that does.
async fn run(shared: &Arc<Handles>, req: &Request, id: &Identity) -> Response {
    use config_cmds::one_at_a_time;
    use Command as C;
    match &req.command {
        C::Status(a) => status::status(shared, a).await,
        C::Suspend(a) => status::suspend(shared, a).await,
        C::Resume(_) => status::resume(shared).await,
        C::SuspendListeners(a) => status::suspend_listeners(shared, a),
        C::ResumeListeners(a) => status::resume_listeners(shared, a),
        C::ResetCounters(_) => status::reset_counters(shared),
        C::SuspendDel(_) => status::suspend_delivery(shared, true).await,
        C::ResumeDel(_) => status::suspend_delivery(shared, false).await,
        C::TopHosts(a) => queue_cmds::tophosts(shared, a).await,
        C::HostStatus(a) => queue_cmds::hoststatus(shared, a).await,
        C::ShowRecipients(a) => queue_cmds::showrecipients(shared, a).await,
        C::DeleteRecipients(a) => queue_cmds::deleterecipients(shared, a).await,
        C::RedirectRecipients(a) => queue_cmds::redirectrecipients(shared, a).await,
        C::BounceRecipients(a) => queue_cmds::bouncerecipients(shared, a).await,
        C::DeliverNow(a) => queue_cmds::delivernow(shared, a).await,
        C::Commit(a) => one_at_a_time(shared, req, a, config_cmds::commit).await,
        C::CommitDetail(a) => one_at_a_time(shared, req, a, config_cmds::commitdetail).await,
        C::Rollback(a) => one_at_a_time(shared, req, a, config_cmds::rollback).await,
        C::ClearChanges(a) => one_at_a_time(shared, req, a, config_cmds::clearchanges).await,
        C::ShowConfig(a) => feature_cmds::with_features(
            shared,
            one_at_a_time(shared, req, a, config_cmds::showconfig).await,
        ),
        C::DeliveryConfig(a) => one_at_a_time(shared, req, a, config_cmds::deliveryconfig).await,
        C::SslConfig(a) => one_at_a_time(shared, req, a, config_cmds::sslconfig).await,
        C::InterfaceConfig(a) => one_at_a_time(shared, req, a, config_cmds::interfaceconfig).await,
        C::ListenerConfig(a) => one_at_a_time(shared, req, a, config_cmds::listenerconfig).await,
        C::SmtpRoutes(a) => one_at_a_time(shared, req, a, config_cmds::smtproutes).await,
        C::CpqEnroll(a) => one_at_a_time(shared, req, a, config_cmds::cpqenroll).await,
        C::Telnet(a) => {
            let test = crate::core::state::NetTest {
                interface: a.interface.clone(),
                timeout: a.timeout,
                domain: None,
                host: a.host.clone(),
                port: a.port,
            };
            probe_reply(shared.probes.telnet(test).await)
        }
        C::TlsVerify(a) => {
            let test = crate::core::state::NetTest {
                interface: a.interface.clone(),
                timeout: a.timeout,
                domain: a.domain.clone(),
                host: a.host.clone(),
                port: a.port,
            };
            probe_reply(shared.probes.tlsverify(test).await)
        }
        C::QuarantineConfig(a) => quarantine_cmds::quarantineconfig(shared, req, a)
            .await
            .unwrap_or_else(Response::from),
        C::Quarantine(q) => quarantine_cmds::quarantine(shared, req, q, id)
            .await
            .unwrap_or_else(Response::from),
        C::OutbreakUpdate(a) => quarantine_cmds::outbreakupdate(shared, a, id)
            .await
            .unwrap_or_else(Response::from),
        C::OutbreakStatus(_) => quarantine_cmds::outbreakstatus(shared)
            .await
            .unwrap_or_else(Response::from),
        C::UserConfig(a) => user_cmds::userconfig(shared, req, a, id).await,
        C::AuditLog(a) => user_cmds::auditlog(shared, a).await,
        C::PvoConfig(a) => pvo_cmds::pvoconfig(shared, req, a, id).await,
        C::Diagnose(_) => pvo_cmds::diagnose(shared).await,
        C::CpqCert(a) => pvo_cmds::cpqcert(shared, req, a),
        C::ApplianceConfig(a) => pvo_cmds::applianceconfig(shared, req, a).await,
        C::ClusterConfig(a) if a.action == command::ClusterAction::Joininfo => {
            let (s, a) = (shared.clone(), a.clone());
            let token = match &id.from {
                Origin::JoinToken { token, .. } => Some(token.clone()),
                _ => None,
            };
            tokio::task::spawn_blocking(move || cluster_cmds::joininfo(&s, &a, token.as_deref()))
                .await
                .unwrap_or_else(|e| {
                    Response::error(format!("joininfo failed inside the node: {e}"))
                })
        }
        C::ClusterConfig(a) => one_at_a_time(shared, req, a, cluster_cmds::clusterconfig).await,
        C::ClusterCheck(a) => one_at_a_time(shared, req, a, cluster_cmds::clustercheck).await,
        C::FeatureKey(a) => feature_cmds::featurekey(shared, a, id).await,
    }
}

/// The reply of a network test (`telnet`, `tlsverify`): a refused argument is invalid, a
/// test that ran and failed is the far side unavailable.
fn probe_reply(run: crate::core::state::ProbeRun) -> Response {
    match run {
        crate::core::state::ProbeRun::Refused(text) => Response::error(text),
        crate::core::state::ProbeRun::Ran {
            ok: true,
            text,
            data,
        } => Response::ok(text, data),
        crate::core::state::ProbeRun::Ran {
            ok: false,
            text,
            data,
        } => Response {
            ok: false,
            text,
            data,
            kind: Some(ErrorKind::Unavailable),
        },
    }
}
