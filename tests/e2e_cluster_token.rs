//! Joining a cluster with a single-use join token (`clusterconfig jointoken` on a member,
//! `clusterconfig join --token` on the new machine), with real pvo processes, a private
//! PostgreSQL and real SSH: the token works once and names who used it; an expired, a
//! revoked and a redirected token (another host key) are refused, the last before any
//! login; `ssh pvojoin@member` with a wrong secret is refused and audited, and with a
//! right one nothing but `clusterconfig joininfo` runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::support::{
    json, openssh, printed, pvo_json, pvo_try, ssh_addr, text, wait_line, wait_until, GatewayToml,
    Node, Postgres, Sink,
};

const APPLIED: std::time::Duration = std::time::Duration::from_secs(15);

fn gateway(sink: &Sink, name: &str) -> Node {
    Node::start(
        &GatewayToml::new(sink)
            .hostname(&format!("{name}.example.com"))
            .build(),
    )
}

/// Runs one SQL statement in the test's own connection to its PostgreSQL.
fn sql(pg: &Postgres, statement: &str) -> u64 {
    let url = pg.url();
    let statement = statement.to_string();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client.execute(statement.as_str(), &[]).await.unwrap()
        })
}

fn machines(node: &Node) -> Vec<String> {
    json(node, &["clusterconfig", "list"])["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["machines"].as_array().unwrap().clone())
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// A new token on `member`: (token, hash prefix).
fn token(member: &Node) -> (String, String) {
    let t = json(member, &["clusterconfig", "jointoken"]);
    (
        t["token"].as_str().unwrap().to_string(),
        t["hash"].as_str().unwrap().to_string(),
    )
}

/// `clusterconfig join --token` as `machine` (`gwN`, known in the cluster as 10.3.0.N).
fn join(node: &Node, token: &str, machine: &str) -> (bool, String) {
    let address = format!("10.3.0.{}", machine.trim_start_matches("gw"));
    pvo_try(
        node,
        &[
            "clusterconfig",
            "join",
            "--token",
            token,
            "--machine",
            machine,
            "--address",
            &address,
        ],
    )
}

/// A cluster of one (gw1, with SSH on loopback, which every member then runs).
fn cluster(pg: &Postgres, sink: &Sink) -> Node {
    let gw1 = Node::start(
        &GatewayToml::new(sink)
            .hostname("gw1.example.com")
            .ssh()
            .build(),
    );
    text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "north",
            "--url",
            &pg.url(),
            "--machine",
            "gw1",
            "--address",
            "10.3.0.1",
        ],
    );
    gw1
}

#[test]
fn a_join_token_joins_one_machine_once() {
    let pg = Postgres::start();
    let sink = Sink::accepting();
    let gw1 = cluster(&pg, &sink);
    let gw2 = gateway(&sink, "gw2");
    let gw3 = gateway(&sink, "gw3");

    // Minutes out of range are refused; the default is an hour.
    for bad in ["0", "1441"] {
        let (ok, out) = pvo_try(&gw1, &["clusterconfig", "jointoken", "--expires", bad]);
        assert!(!ok && out.contains("1 to 1440"), "{out}");
    }
    let made = text(&gw1, &["clusterconfig", "jointoken"]);
    assert!(
        made.contains("pvojoin1.") && made.contains("clusterconfig join --token"),
        "{made}"
    );
    let (tok, hash) = token(&gw1);
    let secret = tok.rsplit('.').next().unwrap().to_string();
    let listed = text(&gw1, &["clusterconfig", "jointoken", "list"]);
    assert!(
        listed.contains(&hash) && !listed.contains(&secret),
        "{listed}"
    );
    let raw = serde_json::to_string(&json(&gw1, &["clusterconfig", "jointoken", "list"])).unwrap();
    assert!(!raw.contains(&secret), "{raw}");
    gw1.wait_for_log(
        &format!("Cluster: join token {hash} made by"),
        crate::support::EVENT_TIMEOUT,
    );

    // gw2 joins with it and runs the cluster's settings (gw1's [ssh] is the cluster's).
    let (ok, out) = join(&gw2, &tok, "gw2");
    assert!(
        ok && out.contains("with a join token") && out.contains("joined cluster north"),
        "{out}"
    );
    assert_eq!(machines(&gw1), ["gw1", "gw2"]);
    wait_until(
        APPLIED,
        || json(&gw2, &["status"])["ssh"].as_str().map(str::to_string),
        || format!("gw2 does not run the cluster's [ssh]\n{}", gw2.mail_logs()),
    );
    wait_line(&gw1, &["Cluster: join token", "accepted for an SSH login"]);
    wait_line(
        &gw1,
        &[&format!("join token {hash} claimed by machine gw2")],
    );
    wait_line(
        &gw2,
        &[&format!(
            "join token {hash} used: machine gw2 joined with it"
        )],
    );
    // Spent: no longer listed.
    let listed = json(&gw1, &["clusterconfig", "jointoken", "list"]);
    assert!(
        !listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["hash"] == hash.as_str()),
        "{listed}"
    );

    // The same token from gw3: refused, naming gw2; nothing joined.
    let (ok, out) = join(&gw3, &tok, "gw3");
    assert!(
        !ok && out.contains("Not joined") && out.contains("machine gw2 joined with it"),
        "{out}"
    );
    assert!(text(&gw3, &["clusterconfig", "connstatus"]).contains("not in a cluster"));
    assert_eq!(machines(&gw1), ["gw1", "gw2"]);

    // A token that is cut or altered is refused with the parser's words.
    let (ok, out) = join(&gw3, "pvojoin1.abc", "gw3");
    assert!(!ok && out.contains("parts separated by '.'"), "{out}");
}

#[test]
fn expired_revoked_and_redirected_tokens_are_refused() {
    let pg = Postgres::start();
    let sink = Sink::accepting();
    let gw1 = cluster(&pg, &sink);
    let gw3 = gateway(&sink, "gw3");

    // Expired: the store's clock says so.
    let (expired, hash) = token(&gw1);
    assert_eq!(
        sql(
            &pg,
            &format!(
                "UPDATE pvo_cluster.join_token SET expires_at = now() - interval '1 minute' WHERE left(hash, 8) = '{hash}'"
            )
        ),
        1
    );
    let (ok, out) = join(&gw3, &expired, "gw3");
    assert!(!ok && out.contains("the join token expired at"), "{out}");

    // Revoked by an administrator: gone from the list, refused naming who revoked it.
    let (revoked, hash) = token(&gw1);
    let out = text(&gw1, &["clusterconfig", "jointoken", "revoke", &hash]);
    assert!(out.contains("revoked"), "{out}");
    wait_line(&gw1, &[&format!("Cluster: join token {hash} revoked by")]);
    let (ok, out) = pvo_try(&gw1, &["clusterconfig", "jointoken", "revoke", &hash]);
    assert!(!ok && out.contains("no join token"), "{out}");
    let (ok, out) = join(&gw3, &revoked, "gw3");
    assert!(
        !ok && out.contains("the join token was revoked by"),
        "{out}"
    );

    // Another host key in the token (a redirect to an impostor): refused before any
    // login, so the member sees no login at all.
    let (good, _) = token(&gw1);
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut key = b64.decode(&parts[2]).unwrap();
        key[0] ^= 1;
        parts[2] = b64.encode(key);
    }
    let redirected = parts.join(".");
    let mark = gw1.log_mark();
    let logins_before = login_entries(&gw1, "pvojoin").len();
    let (ok, out) = join(&gw3, &redirected, "gw3");
    assert!(
        !ok && out.contains("not the expected") && out.contains("no password or secret was sent"),
        "{out}"
    );
    assert_eq!(login_entries(&gw1, "pvojoin").len(), logins_before);
    assert!(
        !gw1.log_since(mark).contains("join token"),
        "{}",
        gw1.log_since(mark)
    );
    // The token itself still works (nothing spent it): gw3 joins with it.
    let (ok, out) = join(&gw3, &good, "gw3");
    assert!(ok && out.contains("joined cluster north"), "{out}");
    assert_eq!(machines(&gw1), ["gw1", "gw3"]);
}

fn login_entries(node: &Node, user: &str) -> Vec<Value> {
    pvo_json(node, &["auditlog", "--user", user, "--action", "login"])["data"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn askpass(node: &Node) -> PathBuf {
    let p = node.dir().join("askpass.sh");
    fs::write(&p, "#!/bin/sh\nprintf '%s\\n' \"$PVO_TEST_PASSWORD\"\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `ssh pvojoin@NODE COMMAND` with `password`, through OpenSSH.
fn ssh_pvojoin(node: &Node, password: &str, command: &str) -> Output {
    let addr = ssh_addr(node);
    openssh()
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-l", "pvojoin"])
        .arg(addr.ip().to_string())
        .arg(command)
        .env_remove("SSH_AUTH_SOCK")
        .env("SSH_ASKPASS", askpass(node))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("PVO_TEST_PASSWORD", password)
        .output()
        .expect("run ssh")
}

#[test]
fn ssh_as_pvojoin_runs_only_joininfo_and_only_with_a_token_that_works() {
    let pg = Postgres::start();
    let sink = Sink::accepting();
    let gw1 = cluster(&pg, &sink);

    // A wrong secret: refused, audited, logged.
    let wrong = "A".repeat(43);
    let out = ssh_pvojoin(&gw1, &wrong, "clusterconfig joininfo --machine gw9 --json");
    assert!(!out.status.success(), "{}", printed(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("url"),
        "{}",
        printed(&out)
    );
    let entries = login_entries(&gw1, "pvojoin");
    assert!(
        entries
            .iter()
            .any(|e| e["outcome"] == "failed" && e["command"] == "login (ssh join token)"),
        "{entries:?}"
    );
    wait_line(&gw1, &["Cluster: join token refused for an SSH login from"]);

    // The right secret: every command but joininfo is refused by the role.
    let (tok, hash) = token(&gw1);
    let secret = tok.rsplit('.').next().unwrap().to_string();
    for command in [
        "status",
        "clusterconfig list",
        "clusterconfig jointoken",
        "userconfig list",
    ] {
        let out = ssh_pvojoin(&gw1, &secret, command);
        let all = printed(&out);
        assert!(
            !out.status.success() && all.contains("Role \"Cluster Joiner\" cannot"),
            "{command}: {all}"
        );
    }
    // joininfo answers where the store is, and claims the token for that machine.
    let out = ssh_pvojoin(&gw1, &secret, "clusterconfig joininfo --machine gw7 --json");
    assert!(out.status.success(), "{}", printed(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["data"]["url"].as_str(),
        Some(pg.url().as_str()),
        "{answer}"
    );
    // The same machine again works (a retried join); another machine does not.
    let out = ssh_pvojoin(&gw1, &secret, "clusterconfig joininfo --machine gw7 --json");
    assert!(out.status.success(), "{}", printed(&out));
    let out = ssh_pvojoin(&gw1, &secret, "clusterconfig joininfo --machine gw8 --json");
    assert!(
        !out.status.success() && printed(&out).contains("being used by machine gw7"),
        "{}",
        printed(&out)
    );
    wait_line(
        &gw1,
        &[&format!("join token {hash} claimed by machine gw7")],
    );

    // userconfig refuses to make a user of that name.
    let (ok, out) = pvo_try(
        &gw1,
        &[
            "userconfig",
            "new",
            "--name",
            "pvojoin",
            "--role",
            "Administrator",
        ],
    );
    assert!(!ok && out.contains("reserved"), "{out}");
}
