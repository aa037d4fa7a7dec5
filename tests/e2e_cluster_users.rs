//! One user base for a cluster of three real gateways on a private PostgreSQL: a user
//! added on one member logs in on the others within a second; a password changed on one
//! works everywhere and the old one nowhere; a deleted user logs in nowhere; two members
//! changing users from the same revision — the second is refused naming the first; with
//! PostgreSQL stopped every member logs users in with its copy and refuses changes;
//! a member away catches up; `join` replaces the joiner's users (its own admin password
//! no longer works) and `removemachine` leaves a machine with the users it had. Logins
//! are `pvo --user NAME` with a password on each member's admin socket.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    cluster_gateway, cluster_status, initial_password, json, new_user, pvo, pvo_bin, pvo_stdin,
    pvo_try, rt, text, wait_connected, wait_revision, wait_until, HeldLock, Node, Postgres, Sink,
    APPLIED,
};

/// `pvo --user USER status` with `password`: whether the login was taken.
fn logs_in(node: &Node, user: &str, password: &str) -> bool {
    let out = login(node, user, password);
    out.status.success()
}

fn login(node: &Node, user: &str, password: &str) -> Output {
    Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(["--user", user, "status"])
        .env("PVO_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("run pvo")
}

/// The users revision a member's copy is (its `users.json`).
fn users_revision(node: &Node) -> u64 {
    let text = std::fs::read_to_string(node.data_dir().join("users.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["revision"].as_u64().unwrap_or(0)
}

/// Waits until every node took users revision `revision`, by `deadline`.
fn all_took(nodes: &[&Node], revision: u64, deadline: Instant) {
    for node in nodes {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_until(
            left,
            || (users_revision(node) >= revision).then_some(()),
            || {
                format!(
                    "{} did not take users revision {revision} in time (it has {}):\n{}",
                    node.dir().display(),
                    users_revision(node),
                    node.mail_logs()
                )
            },
        );
    }
}

fn join(node: &Node, url: &str, machine: &str, address: &str) -> String {
    text(
        node,
        &[
            "clusterconfig",
            "join",
            "--url",
            url,
            "--machine",
            machine,
            "--address",
            address,
        ],
    )
}

/// `pvo ARGS` started, not waited for.
fn spawn(node: &Node, args: &[&str]) -> std::process::Child {
    Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvo")
}

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn three_gateways_share_one_user_base() {
    let mut pg = Postgres::start();
    let url = pg.url();
    let rt = rt();
    let sink = Sink::accepting();
    let gw1 = cluster_gateway(&sink, "gw1");
    let gw2 = cluster_gateway(&sink, "gw2");
    let gw3 = cluster_gateway(&sink, "gw3");
    let admin = initial_password(&gw1);
    let gw2_admin = initial_password(&gw2);
    // gw2 has a user of its own before it joins.
    new_user(&gw2, "local2", "Operator", "local2-password");

    let out = text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "east",
            "--url",
            &url,
            "--machine",
            "gw1",
            "--address",
            "10.0.0.1",
        ],
    );
    assert!(
        out.contains("Its 1 users are now the cluster's (users revision 1)"),
        "{out}"
    );
    assert!(gw1.data_dir().join("run/initial-admin-password").exists());

    // Joining: the machine's users are replaced by the cluster's, the old file kept.
    let out = join(&gw2, &url, "gw2", "10.0.0.2");
    assert!(
        out.contains("its 2 users were replaced by the cluster's 1")
            || out.contains("Its 2 users were replaced by the cluster's 1"),
        "{out}"
    );
    assert!(gw2.data_dir().join("users.json.before-join").exists());
    assert!(
        !gw2.data_dir().join("run/initial-admin-password").exists(),
        "a joined machine's generated password no longer applies"
    );
    join(&gw3, &url, "gw3", "10.0.0.3");
    // The joiner's own admin password and its own user are gone; the cluster's admin
    // logs in on it. A naive join that merged would let gw2's admin into the cluster.
    assert!(!logs_in(&gw2, "admin", &gw2_admin));
    assert!(!logs_in(&gw2, "local2", "local2-password"));
    assert!(!logs_in(&gw1, "local2", "local2-password"));
    assert!(logs_in(&gw2, "admin", &admin));
    assert!(logs_in(&gw3, "admin", &admin));

    // Users are cluster-level only.
    for level in ["machine", "group:Main_Group"] {
        let (ok, out) = pvo_try(
            &gw2,
            &[
                "--level",
                level,
                "userconfig",
                "new",
                "--name",
                "x1",
                "--role",
                "Guest",
            ],
        );
        assert!(!ok && out.contains("cluster-level only"), "{out}");
    }
    assert!(text(&gw2, &["userconfig", "list"]).contains("admin"));

    // A user added on gw1 logs in on gw2 and gw3 within a second of the command.
    new_user(&gw1, "bob", "Operator", "bobs-password-1");
    let done = Instant::now();
    let rev = users_revision(&gw1);
    assert!(rev >= 2, "{rev}");
    all_took(&[&gw2, &gw3], rev, done + Duration::from_secs(1));
    for gw in [&gw1, &gw2, &gw3] {
        assert!(
            logs_in(gw, "bob", "bobs-password-1"),
            "{}",
            gw.dir().display()
        );
    }
    gw2.wait_for_log(
        &format!("machine gw2 took the cluster's users at users revision {rev} (by admin on gw1: userconfig new bob)"),
        APPLIED,
    );

    // bob's password changed on gw3: the new one works on gw1, the old one nowhere.
    pvo_stdin(
        &gw3,
        &["userconfig", "password", "bob", "--password-stdin"],
        "bobs-password-2\n",
    );
    let rev = users_revision(&gw3);
    all_took(&[&gw1, &gw2], rev, Instant::now() + APPLIED);
    assert!(logs_in(&gw1, "bob", "bobs-password-2"));
    for gw in [&gw1, &gw2, &gw3] {
        assert!(!logs_in(gw, "bob", "bobs-password-1"));
    }
    // The store's history names what changed, never the password.
    let history = rt.block_on(async {
        let db = pvo::adapters::cluster_db::ClusterDb::connect(&url, "test", None)
            .await
            .unwrap();
        db.users_history(0).await.unwrap()
    });
    let whats: Vec<String> = history.iter().map(|r| r.to_string()).collect();
    assert!(
        whats
            .iter()
            .any(|w| w.contains("by admin on gw3") && w.ends_with("userconfig password bob")),
        "{whats:?}"
    );
    assert!(
        !whats.iter().any(|w| w.contains("bobs-password")),
        "{whats:?}"
    );

    // Deleted on gw2: bob logs in nowhere.
    text(&gw2, &["userconfig", "delete", "bob"]);
    let rev = users_revision(&gw2);
    all_took(&[&gw1, &gw3], rev, Instant::now() + APPLIED);
    for gw in [&gw1, &gw2, &gw3] {
        assert!(!logs_in(gw, "bob", "bobs-password-2"));
    }

    // Two members from the same revision: both wait for the store's users lock (held
    // here), then the first is written and the second refused, naming the first.
    let base = users_revision(&gw1);
    let lock = HeldLock::take(&url, pvo::adapters::cluster_db::LOCK_USERS);
    let first = spawn(
        &gw1,
        &["userconfig", "new", "--name", "alice", "--role", "Guest"],
    );
    lock.wait_for_waiters(1, APPLIED);
    let second = spawn(
        &gw2,
        &["userconfig", "new", "--name", "carol", "--role", "Guest"],
    );
    lock.wait_for_waiters(2, APPLIED);
    lock.release();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    let (won, lost, winner) = match (first.status.success(), second.status.success()) {
        (true, false) => (&first, &second, "userconfig new alice"),
        (false, true) => (&second, &first, "userconfig new carol"),
        _ => panic!(
            "exactly one of two changes from users revision {base} must go through:\n{}\n{}",
            all(&first),
            all(&second)
        ),
    };
    let refusal = all(lost);
    assert!(all(won).contains("created"), "{}", all(won));
    assert!(
        refusal.contains(&format!(
            "the cluster's users changed since users revision {base}, which this machine's copy is from"
        )) && refusal.contains(winner),
        "{refusal}"
    );
    let rev = base + 1;
    all_took(&[&gw1, &gw2, &gw3], rev, Instant::now() + APPLIED);
    let loser = if winner.ends_with("alice") {
        "carol"
    } else {
        "alice"
    };
    assert!(!text(&gw3, &["userconfig", "list"]).contains(loser));

    // PostgreSQL stopped: every member logs users in with its copy; a change is refused.
    new_user(&gw1, "dave", "Operator", "daves-password");
    all_took(
        &[&gw2, &gw3],
        users_revision(&gw1),
        Instant::now() + APPLIED,
    );
    pg.stop();
    for gw in [&gw1, &gw2, &gw3] {
        wait_connected(gw, false, APPLIED);
    }
    for gw in [&gw1, &gw2, &gw3] {
        assert!(
            logs_in(gw, "dave", "daves-password"),
            "{}",
            gw.dir().display()
        );
        assert!(logs_in(gw, "admin", &admin));
    }
    let out = pvo(
        &gw2,
        &["userconfig", "new", "--name", "erin", "--role", "Guest"],
    );
    let said = out.all();
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("users are the cluster's; this machine cannot reach the cluster's store: see `clusterconfig connstatus`"),
        "{said}"
    );
    assert!(!text(&gw2, &["userconfig", "list"]).contains("erin"));

    // Back: the members reconnect; a change goes through; a member held away catches up
    // when it reconnects.
    pg.start_again();
    for gw in [&gw1, &gw2, &gw3] {
        wait_connected(gw, true, Duration::from_secs(60));
    }
    text(&gw3, &["clusterconfig", "disconnect"]);
    new_user(&gw2, "erin", "Operator", "erins-password");
    let rev = users_revision(&gw2);
    all_took(&[&gw1], rev, Instant::now() + APPLIED);
    assert!(!logs_in(&gw3, "erin", "erins-password"), "held away");
    text(&gw3, &["clusterconfig", "reconnect"]);
    all_took(&[&gw3], rev, Instant::now() + APPLIED);
    assert!(logs_in(&gw3, "erin", "erins-password"));

    // Removed by another member: gw3 keeps the user base it had, as its own again.
    let head = json(&gw1, &["clusterconfig", "list"])["revision"]
        .as_u64()
        .unwrap();
    wait_revision(&gw3, head);
    text(&gw1, &["clusterconfig", "removemachine", "gw3"]);
    wait_until(
        APPLIED,
        || cluster_status(&gw3)["machine"].is_null().then_some(()),
        || format!("gw3 did not leave: {}", gw3.mail_logs()),
    );
    assert_eq!(users_revision(&gw3), 0);
    assert!(logs_in(&gw3, "erin", "erins-password"));
    // Its changes are its own now and reach no member.
    new_user(&gw3, "frank", "Operator", "franks-password");
    assert!(logs_in(&gw3, "frank", "franks-password"));
    // Removing itself: gw2 keeps them too.
    text(&gw2, &["clusterconfig", "removemachine", "gw2"]);
    assert_eq!(users_revision(&gw2), 0);
    assert!(logs_in(&gw2, "erin", "erins-password"));
    assert!(logs_in(&gw2, "admin", &admin));
    new_user(&gw1, "gina", "Operator", "ginas-password");
    assert!(!logs_in(&gw1, "frank", "franks-password"));
    assert!(!logs_in(&gw2, "gina", "ginas-password"));
}
