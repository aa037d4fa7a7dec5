//! `/api/v1/cluster`: `clusterconfig` and `clustercheck` over the REST API. Reads are
//! `GET /api/v1/cluster` (`clusterconfig list`), `GET /api/v1/cluster/connstatus` and
//! `GET /api/v1/cluster/check` (`clustercheck`), `GET /api/v1/cluster/joininfo`
//! (where the store is, for a joining machine); every changing action is `POST
//! /api/v1/cluster/ACTION` with a JSON body of its `clusterconfig` arguments
//! (`openapi::cluster::CHANGES`: the keys each takes and needs) and, for `deletesettings`, the cluster
//! `level` the command reads (`--level`). Each is one `dispatch_as` as the token's user;
//! a failure's status is its kind (`status_of`): a machine in no cluster answers 503 to
//! what needs one (the command's "not in a cluster"), and 200 with `cluster: false` to
//! connstatus.
//!
//! The bodies are checked here against what the document says of them (`key_schema`),
//! so a request the document calls invalid is refused 400 before any command runs. The
//! answers are the command's `data` read into the reply types of `commands::replies`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{error, object, status_of, HttpResponse, IntoResponse, Json, StatusCode, Token};
use crate::adapters::web::openapi::cluster::{
    key_schema, CHANGES, HASH, LEVEL, MINUTES, NAME, PASSWORD, SECTION, TOKEN, URL,
};
use crate::commands::protocol::Request;
use crate::commands::replies::{
    ClusterCheckReply, ClusterConnstatus, ClusterCreated, ClusterHold, ClusterJoinInfo,
    ClusterJoinToken, ClusterJoinTokenRevoked, ClusterJoinTokens, ClusterJoined, ClusterList,
    ClusterMachineRemoved, ClusterMembersChanged, ClusterSettingsChanged,
};

/// Whether `v` is what `pattern` (one of this module's) says.
fn conforms(pattern: &str, v: &str) -> bool {
    let name = |s: &str| {
        let mut c = s.chars();
        (1..=63).contains(&s.len())
            && c.next().is_some_and(|f| f.is_ascii_alphanumeric())
            && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'))
    };
    let word = |s: &str, max: usize| {
        (1..=max).contains(&s.chars().count()) && !s.chars().any(char::is_whitespace)
    };
    match pattern {
        NAME => name(v),
        LEVEL => {
            v == "cluster"
                || v == "machine"
                || v.strip_prefix("machine:").is_some_and(name)
                || v.strip_prefix("group:").is_some_and(name)
        }
        PASSWORD => (1..=1024).contains(&v.chars().count()) && !v.contains(['\r', '\n']),
        TOKEN => {
            let b64 = |p: &str, n: std::ops::RangeInclusive<usize>| {
                n.contains(&p.len())
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            let parts: Vec<&str> = v.split('.').collect();
            parts.len() == 4
                && parts[0] == "pvojoin1"
                && b64(parts[1], 1..=400)
                && b64(parts[2], 43..=43)
                && b64(parts[3], 43..=43)
        }
        MINUTES => {
            v.parse::<u64>().is_ok_and(|m| (1..=1440).contains(&m)) && !v.starts_with(['0', '+'])
        }
        HASH => {
            (8..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        SECTION => {
            let mut c = v.chars();
            (1..=64).contains(&v.len())
                && c.next().is_some_and(|f| f.is_ascii_lowercase())
                && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        }
        URL => match ["postgresql://", "postgres://"]
            .iter()
            .find_map(|p| v.strip_prefix(p))
        {
            Some(rest) => word(rest, 1000),
            None => {
                let pairs: Vec<&str> = v.split(' ').collect();
                pairs.len() <= 16
                    && pairs.iter().all(|p| {
                        p.split_once('=').is_some_and(|(k, val)| {
                            (1..=32).contains(&k.len())
                                && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                                && val.chars().count() <= 1000
                                && !val.chars().any(char::is_whitespace)
                        })
                    })
            }
        },
        _ => word(v, 255),
    }
}

/// The command's `data` as the reply type `T` (a disagreement is a bug: 500).
fn typed<T: DeserializeOwned + Serialize>(what: &str, data: Value) -> HttpResponse {
    match serde_json::from_value::<T>(data) {
        Ok(t) => Json(t).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{what} answered an unexpected record: {e}"),
        ),
    }
}

/// Runs `command` with `args` (and the cluster `level`) as the token's user; its
/// `data` as `T`, or the status of its failure.
async fn run<T: DeserializeOwned + Serialize>(
    Token { s, id }: Token,
    command: &str,
    args: Value,
    level: Option<String>,
) -> HttpResponse {
    let what = match args["action"].as_str() {
        Some(a) => format!("{command} {a}"),
        None => command.to_string(),
    };
    let mut req = match crate::commands::command::Command::from_parts(command, args) {
        Ok(c) => Request::new(c),
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.text),
    };
    req.level = level;
    let resp = crate::commands::dispatch_as(&s, req, &id).await;
    if !resp.ok {
        return error(status_of(resp.kind), &resp.text);
    }
    typed::<T>(&what, resp.data)
}

/// GET /api/v1/cluster: the groups and machines (`clusterconfig list`).
pub(super) async fn list(t: Token) -> HttpResponse {
    run::<ClusterList>(t, "clusterconfig", json!({ "action": "list" }), None).await
}

/// GET /api/v1/cluster/connstatus: this machine's connection to the cluster's store.
pub(super) async fn connstatus(t: Token) -> HttpResponse {
    run::<ClusterConnstatus>(t, "clusterconfig", json!({ "action": "connstatus" }), None).await
}

/// GET /api/v1/cluster/check: the differences between levels and machines.
pub(super) async fn check(t: Token) -> HttpResponse {
    run::<ClusterCheckReply>(t, "clustercheck", json!({}), None).await
}

/// GET /api/v1/cluster/joininfo: where this member's store is, for a machine that joins
/// (`clusterconfig joininfo`; it names the store and its CA: Configure only).
pub(super) async fn joininfo(t: Token) -> HttpResponse {
    run::<ClusterJoinInfo>(t, "clusterconfig", json!({ "action": "joininfo" }), None).await
}

/// GET /api/v1/cluster/jointokens: the join tokens that still work (`clusterconfig
/// jointoken list`; never a token itself: Configure only).
pub(super) async fn jointokens(t: Token) -> HttpResponse {
    run::<ClusterJoinTokens>(
        t,
        "clusterconfig",
        json!({ "action": "jointoken-list" }),
        None,
    )
    .await
}

/// The checked arguments of `action` from `body`, and the level it names.
fn arguments(
    action: &str,
    body: &Map<String, Value>,
) -> Result<(Value, Option<String>), HttpResponse> {
    let Some((_, keys, needed)) = CHANGES.iter().find(|(a, _, _)| *a == action) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "No such clusterconfig action.",
        ));
    };
    if let Some(k) = body.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &if keys.is_empty() {
                format!("unknown key {k:?}: {action} takes no arguments")
            } else {
                format!("unknown key {k:?}; allowed: {}", keys.join(", "))
            },
        ));
    }
    let mut args = json!({ "action": action });
    let mut level = None;
    for k in *keys {
        match body.get(*k) {
            None if needed.contains(k) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!("{action}: give {}", needed.join(", ")),
                ))
            }
            None => {}
            Some(Value::String(v)) => {
                let (pattern, what) = key_schema(action, k);
                if !conforms(pattern, v) {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        &format!("{k}: {what} {v:?} is not one (pattern {pattern})"),
                    ));
                }
                if *k == "level" {
                    level = Some(v.clone());
                } else if *k == "expires" {
                    args[*k] = json!(v.parse::<u64>().unwrap_or_default());
                } else {
                    args[*k] = json!(v);
                }
            }
            Some(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!("{k} must be a string"),
                ))
            }
        }
    }
    Ok((args, level))
}

/// POST /api/v1/cluster/ACTION: one changing `clusterconfig` action.
pub(super) async fn change(
    t: Token,
    body: axum::body::Bytes,
    action: &'static str,
) -> HttpResponse {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (args, level) = match arguments(action, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let c = "clusterconfig";
    match action {
        "create" => run::<ClusterCreated>(t, c, args, level).await,
        "join" => run::<ClusterJoined>(t, c, args, level).await,
        "removemachine" => run::<ClusterMachineRemoved>(t, c, args, level).await,
        "disconnect" | "reconnect" => run::<ClusterHold>(t, c, args, level).await,
        "jointoken" => run::<ClusterJoinToken>(t, c, args, level).await,
        "jointoken-revoke" => run::<ClusterJoinTokenRevoked>(t, c, args, level).await,
        "copysettings" | "movesettings" | "deletesettings" => {
            run::<ClusterSettingsChanged>(t, c, args, level).await
        }
        _ => run::<ClusterMembersChanged>(t, c, args, level).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::web::openapi::cluster::WORD;

    #[test]
    fn every_clusterconfig_change_has_an_endpoint() {
        use crate::commands::command::ClusterAction;
        let mut want: Vec<&str> = ClusterAction::NAMES
            .iter()
            .copied()
            .filter(|a| !["list", "connstatus", "joininfo", "jointoken-list"].contains(a))
            .collect();
        let mut got: Vec<&str> = CHANGES.iter().map(|(a, _, _)| *a).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        for (a, keys, needed) in CHANGES {
            assert!(needed.iter().all(|k| keys.contains(k)), "{a}");
        }
    }

    #[test]
    fn bodies_are_checked_as_the_document_says() {
        for (pattern, good, bad) in [
            (
                NAME,
                &["gw1", "a", "east-1.b_c"][..],
                &["", "-a", "a b", "é", &"a".repeat(64)][..],
            ),
            (
                LEVEL,
                &["cluster", "machine", "machine:gw1", "group:east"],
                &["", "group:", "machine:-x", "Cluster", "group:a b"],
            ),
            (
                SECTION,
                &["tls", "content_filter", "a1"],
                &["", "Tls", "1a", "a-b"],
            ),
            (
                URL,
                &[
                    "postgresql://pvo@db:5432/pvo",
                    "postgres://x",
                    "host=/tmp/pg port=5432 user=pvo dbname=postgres",
                ],
                &[
                    "postgresql://",
                    "mysql://x",
                    "postgresql://a b",
                    "host=/tmp  port=1",
                    " host=a",
                    "Host=a",
                ],
            ),
            (WORD, &["10.0.0.1", "ca.pem"], &["", "a b", " "]),
            (PASSWORD, &["a b", "p@ss"], &["", "a\nb"]),
            (
                MINUTES,
                &["1", "60", "999", "1440"],
                &["0", "1441", "01", "+5", "", "x"],
            ),
            (
                HASH,
                &["1a2b3c4d", &"f".repeat(64)],
                &["1a2b3c4", "1A2B3C4D", "1a2b3c4g"],
            ),
            (
                TOKEN,
                &[&format!(
                    "pvojoin1.MTI3LjAuMC4xOjIy.{}.{}",
                    "A".repeat(43),
                    "b".repeat(43)
                )],
                &[
                    "pvojoin1.a.b",
                    &format!("pvojoin2.a.{}.{}", "A".repeat(43), "b".repeat(43)),
                ],
            ),
        ] {
            for v in good {
                assert!(conforms(pattern, v), "{pattern} {v:?}");
            }
            for v in bad {
                assert!(!conforms(pattern, v), "{pattern} {v:?}");
            }
        }
        let body = |v: Value| v.as_object().unwrap().clone();
        let (args, level) = arguments(
            "deletesettings",
            &body(json!({ "section": "tls", "level": "group:east" })),
        )
        .unwrap();
        assert_eq!(
            args,
            json!({ "action": "deletesettings", "section": "tls" })
        );
        assert_eq!(level.as_deref(), Some("group:east"));
        for (action, b, code) in [
            ("addgroup", json!({}), 400),
            ("addgroup", json!({ "name": 5 }), 400),
            ("addgroup", json!({ "name": null }), 400),
            ("addgroup", json!({ "name": "a", "x": "y" }), 400),
            ("disconnect", json!({ "name": "a" }), 400),
            ("reboot", json!({}), 404),
        ] {
            let r = arguments(action, &body(b.clone())).unwrap_err();
            assert_eq!(r.status().as_u16(), code, "{action} {b}");
        }
        let (args, _) = arguments(
            "join",
            &body(json!({ "url": "postgresql://h/db", "group": "west" })),
        )
        .unwrap();
        assert_eq!(
            args,
            json!({ "action": "join", "url": "postgresql://h/db", "group": "west" })
        );
    }
}
