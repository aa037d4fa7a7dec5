//! Gateways in a cluster on a private PostgreSQL (`support::Postgres`): one machine
//! creates the cluster, others join and take its settings; a commit at cluster level on
//! any member is put in force on every member; a machine-level value overrides the
//! cluster's on that machine only; a commit from an older revision is refused naming
//! what came in between; a machine held disconnected keeps its revision, refuses commits
//! and catches up when it reconnects; a removed machine keeps what it inherited; with the
//! store gone a member keeps running (and restarts) on its last good configuration and
//! refuses commits, saying why.

use serde_json::Value;

use crate::support::{
    certificates, cluster_gateway, cluster_status, json, pvo, pvo_try, send_relayed, text,
    wait_revision, wait_until, GatewayToml, Node, Postgres, Sink, APPLIED,
};

fn gateway(sink: &Sink, name: &str) -> Node {
    cluster_gateway(sink, name)
}

fn status(node: &Node) -> Value {
    cluster_status(node)
}

fn head(node: &Node) -> u64 {
    json(node, &["clusterconfig", "list"])["revision"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_cluster_of_three_gateways_shares_its_settings_and_every_commit() {
    let mut pg = Some(Postgres::start());
    let url = pg.as_ref().unwrap().url();
    let sink = Sink::accepting();
    let gw1 = gateway(&sink, "gw1");
    let gw2 = gateway(&sink, "gw2");
    let mut gw3 = gateway(&sink, "gw3");

    // Not in a cluster: --level is refused, and connstatus says so.
    let (ok, out) = pvo_try(
        &gw1,
        &[
            "--level",
            "cluster",
            "deliveryconfig",
            "--max-concurrency",
            "9",
        ],
    );
    assert!(!ok && out.contains("not in one"), "{out}");
    let out = text(&gw1, &["clusterconfig", "connstatus"]);
    assert!(out.contains("not in a cluster"), "{out}");

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
        out.contains("Cluster east created") && out.contains("listener"),
        "{out}"
    );
    // The machine's own file now says where its cluster is.
    let own = std::fs::read_to_string(gw1.config_path()).unwrap();
    assert!(
        own.contains("[cluster]") && own.contains("machine = \"gw1\""),
        "{own}"
    );
    for (gw, name, address) in [(&gw2, "gw2", "10.0.0.2"), (&gw3, "gw3", "10.0.0.3")] {
        let out = text(
            gw,
            &[
                "clusterconfig",
                "join",
                "--url",
                &url,
                "--machine",
                name,
                "--address",
                address,
            ],
        );
        assert!(out.contains("joined cluster east"), "{out}");
    }
    let rev = head(&gw1);
    for gw in [&gw1, &gw2, &gw3] {
        wait_revision(gw, rev);
    }
    let list = json(&gw3, &["clusterconfig", "list"]);
    let machines = list["groups"][0]["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 3, "{list}");
    assert!(machines.iter().all(|m| m["connected"] == true), "{list}");

    // A commit at cluster level on one member is in force on all of them.
    let marks = [gw1.log_mark(), gw2.log_mark(), gw3.log_mark()];
    text(
        &gw2,
        &[
            "smtproutes",
            "new",
            "--domain",
            "two.example",
            "--hosts",
            &sink.host_port(),
        ],
    );
    let out = text(&gw2, &["commit", "-m", "route for two.example"]);
    assert!(
        out.contains("Changes committed: revision") && out.contains("(cluster)"),
        "{out}"
    );
    let rev = head(&gw2);
    for (gw, mark) in [&gw1, &gw2, &gw3].into_iter().zip(marks) {
        wait_revision(gw, rev);
        gw.wait_for_log_after(
            mark,
            &format!("applied revision {rev} (cluster, committed by"),
            APPLIED,
        );
        let routes = text(gw, &["smtproutes"]);
        assert!(routes.contains("two.example"), "{routes}");
    }
    let history = text(&gw3, &["commitdetail"]);
    assert!(history.contains("route for two.example"), "{history}");

    // A machine-level value overrides the cluster's on that machine only.
    text(
        &gw3,
        &[
            "--level",
            "machine",
            "deliveryconfig",
            "--max-concurrency",
            "7",
        ],
    );
    text(&gw3, &["commit", "-m", "gw3 sends slower"]);
    let shown = json(&gw3, &["showconfig"]);
    assert_eq!(shown["origins"]["delivery"], "machine:gw3", "{shown}");
    assert_eq!(shown["origins"]["smtp_route"], "cluster", "{shown}");
    let rev = head(&gw3);
    wait_revision(&gw1, rev);
    let concurrency = |gw: &Node| json(gw, &["deliveryconfig"])["max_concurrency"].as_u64();
    assert_eq!(concurrency(&gw3), Some(7));
    assert_ne!(concurrency(&gw1), Some(7));
    // clustercheck names the difference and how to resolve it.
    let check = text(&gw1, &["clustercheck"]);
    assert!(
        check.contains("machine:gw3") && check.contains("clusterconfig movesettings delivery"),
        "{check}"
    );

    // Two administrators from the same revision: the second commit is refused, naming
    // who committed what in between, and keeps its changes pending.
    text(&gw1, &["deliveryconfig", "--max-concurrency", "11"]);
    text(&gw2, &["deliveryconfig", "--max-concurrency", "12"]);
    text(&gw2, &["commit", "-m", "twelve"]);
    let out = pvo(&gw1, &["commit", "-m", "eleven"]);
    let all = out.all();
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("cluster changed since revision") && all.contains("twelve"),
        "{all}"
    );
    text(&gw1, &["clearchanges"]);

    // Held disconnected: keeps its revision, refuses commits, catches up on reconnect.
    let before_three = head(&gw1);
    text(&gw3, &["clusterconfig", "disconnect"]);
    let held_at = status(&gw3)["revision"].as_u64().unwrap();
    text(
        &gw1,
        &[
            "smtproutes",
            "new",
            "--domain",
            "three.example",
            "--hosts",
            &sink.host_port(),
        ],
    );
    text(&gw1, &["commit", "-m", "route for three.example"]);
    let rev = head(&gw1);
    wait_revision(&gw2, rev);
    assert_eq!(status(&gw3)["revision"].as_u64(), Some(held_at));
    text(
        &gw3,
        &[
            "--level",
            "machine",
            "deliveryconfig",
            "--max-concurrency",
            "8",
        ],
    );
    let out = pvo(&gw3, &["commit"]);
    assert!(
        !out.status.success() && out.all().contains("disconnected"),
        "{}",
        out.all()
    );
    text(&gw3, &["clearchanges"]);
    text(&gw3, &["clusterconfig", "reconnect"]);
    wait_revision(&gw3, rev);
    assert!(text(&gw3, &["smtproutes"]).contains("three.example"));

    // Rollback per level: the cluster level as it was before three.example, on every member.
    let out = text(
        &gw2,
        &["--level", "cluster", "rollback", &before_three.to_string()],
    );
    assert!(out.contains("rolled back to revision"), "{out}");
    let rev = head(&gw2);
    wait_revision(&gw1, rev);
    assert!(!text(&gw1, &["smtproutes"]).contains("three.example"));
    assert!(text(&gw1, &["smtproutes"]).contains("two.example"));
    let out = text(
        &gw2,
        &["--level", "cluster", "rollback", &(rev - 1).to_string()],
    );
    assert!(out.contains("rolled back to revision"), "{out}");
    let rev = head(&gw2);
    for gw in [&gw1, &gw3] {
        wait_revision(gw, rev);
    }
    assert!(text(&gw3, &["smtproutes"]).contains("three.example"));

    // A removed machine keeps what it inherited, in its own file.
    let mark = gw3.log_mark();
    text(&gw1, &["clusterconfig", "removemachine", "gw3"]);
    gw3.wait_for_log_after(mark, "machine gw3 was removed", APPLIED);
    let own = std::fs::read_to_string(gw3.config_path()).unwrap();
    assert!(
        own.contains("three.example") && !own.contains("[cluster]"),
        "{own}"
    );
    assert!(text(&gw3, &["clusterconfig", "connstatus"]).contains("not in a cluster"));
    gw3.restart();
    assert!(text(&gw3, &["smtproutes"]).contains("three.example"));

    // The store gone: members keep running on their last good configuration, refuse
    // commits saying why, and start again from it.
    let mark = gw2.log_mark();
    drop(pg.take());
    gw2.wait_for_log_after(mark, "is disconnected from the cluster's store", APPLIED);
    let out = text(&gw2, &["clusterconfig", "connstatus"]);
    assert!(out.contains("NOT connected"), "{out}");
    text(
        &gw2,
        &[
            "--level",
            "cluster",
            "deliveryconfig",
            "--max-concurrency",
            "13",
        ],
    );
    let out = pvo(&gw2, &["commit"]);
    assert!(
        !out.status.success() && out.all().contains("disconnected from the cluster's store"),
        "{}",
        out.all()
    );
    let mut gw2 = gw2;
    gw2.restart();
    assert!(text(&gw2, &["smtproutes"]).contains("three.example"));
    let before = sink.count();
    send_relayed(&gw2, "someone@three.example", "cluster", "hello");
    sink.wait_for_messages(before + 1, APPLIED);
}

/// Scenario 6: content filters below the cluster level grey out Enable with the
/// appliance's words, and `diagnose` names the setting, its level and machine, and the
/// remedy; `status` says how the machine stands with its cluster.
#[test]
fn content_filters_below_the_cluster_level_refuse_centralization() {
    let pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = Node::start(
        &GatewayToml::new(&sink)
            .hostname("gw1.example.com")
            .extra(
                r#"[[content_filter]]
name = "quarantine_test"
conditions = { subject_contains = "[quarantine-test]" }
actions = [{ quarantine = "Policy" }]
"#,
            )
            .build(),
    );
    let gw2 = gateway(&sink, "gw2");
    text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "west",
            "--url",
            &url,
            "--address",
            "10.1.0.1",
        ],
    );
    text(
        &gw2,
        &[
            "clusterconfig",
            "join",
            "--url",
            &url,
            "--address",
            "10.1.0.2",
        ],
    );
    let status_text = text(&gw2, &["status"]);
    assert!(
        status_text.contains("Cluster:")
            && status_text.contains("machine gw2.example.com: connected"),
        "{status_text}"
    );
    let s = json(&gw2, &["status"]);
    assert_eq!(s["cluster"]["connected"], true, "{s}");

    // At cluster level: nothing in the way.
    let d = crate::support::pvo_json(&gw2, &["diagnose"]);
    let levels: Vec<&Value> = d["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "cluster levels")
        .collect();
    assert!(levels.iter().all(|c| c["passed"] == true), "{d}");

    // Overridden on gw2: Enable is refused with the appliance's words.
    text(
        &gw2,
        &[
            "clusterconfig",
            "copysettings",
            "content_filter",
            "--from",
            "cluster",
            "--to",
            "machine",
        ],
    );
    text(&gw2, &["commit", "-m", "gw2 filters differently"]);
    wait_revision(&gw1, head(&gw2));
    let out = pvo(&gw1, &["pvoconfig", "enable", "--manager", "10.1.0.9"]);
    let all = out.all();
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("Unable to proceed with Centralized Policy, Virus and Outbreak Quarantines configuration as gw2.example.com in Cluster have content filters / DLP actions available at a level different from the cluster Level."),
        "{all}"
    );
    let d = pvo(&gw1, &["diagnose"]).all();
    assert!(
        d.contains("[content_filter] is set at machine:gw2.example.com")
            && d.contains("clusterconfig movesettings content_filter --from machine:gw2.example.com --to cluster"),
        "{d}"
    );

    // Resolved: deleted at machine level, the cluster's shows through again.
    text(
        &gw2,
        &[
            "--level",
            "machine",
            "clusterconfig",
            "deletesettings",
            "content_filter",
        ],
    );
    text(&gw2, &["commit", "-m", "back to the cluster's filters"]);
    wait_revision(&gw1, head(&gw2));
    let d = crate::support::pvo_json(&gw1, &["diagnose"]);
    let failed: Vec<&Value> = d["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false && c["scenario"] == 6)
        .collect();
    assert!(failed.is_empty(), "{d}");
}

/// One message from the test's side of `node`'s namespace link, accepted (250 after DATA).
fn accepted(node: &Node) -> bool {
    let Ok((mut c, greeting)) = crate::support::SmtpClient::connect(node.addr(), None) else {
        return false;
    };
    if greeting.code != 220 {
        return false;
    }
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "a@client.test",
        &["b@one.example"],
        "Subject: x\r\n\r\nhi\r\n",
    );
    r.code == 250
}

/// Real hosts: PostgreSQL and three gateways, each in its own network namespace with its
/// own addresses, the store reached over TLS checked against the CA the members were
/// given. The store killed: every member keeps accepting mail and refuses commits.
#[test]
fn gateways_on_their_own_hosts_share_one_store_over_tls() {
    let db = crate::support::Namespace::create();
    let hosts: Vec<crate::support::Namespace> = (0..3)
        .map(|_| crate::support::Namespace::create())
        .collect();
    let links: Vec<(String, String)> = hosts.iter().map(|h| h.link_to(&db)).collect();
    let store_addresses: Vec<String> = links.iter().map(|(_, db_side)| db_side.clone()).collect();
    let (ca, cert, key) = certificates(&store_addresses);
    let mut pg = Some(Postgres::start_tls_in(&db, &cert, &key));
    let sink = Sink::accepting();
    let mut gws = Vec::new();
    for (i, ns) in hosts.iter().enumerate() {
        let dir = tempfile::Builder::new()
            .prefix("pvo-node-")
            .tempdir()
            .unwrap();
        let toml = GatewayToml::new(&sink)
            .hostname(&format!("gw{}.example.com", i + 1))
            .address(ns.inside())
            .accept_all()
            .build();
        std::fs::write(dir.path().join("pvo.toml"), &toml).unwrap();
        std::fs::write(dir.path().join("store-ca.pem"), &ca).unwrap();
        let config = dir.path().join("pvo.toml").to_string_lossy().into_owned();
        let data = dir.path().to_path_buf();
        gws.push(Node::start_under(
            &["ip", "netns", "exec", &ns.name],
            dir,
            data,
            &["gateway", "run", "--config", &config],
            crate::support::Listeners::Named(vec!["IncomingMail".into()]),
        ));
    }
    let pg_ref = pg.as_ref().unwrap();
    for (i, gw) in gws.iter().enumerate() {
        let url = pg_ref.tcp_url_at(&links[i].1);
        let name = format!("gw{}", i + 1);
        let address = hosts[i].inside();
        let action = if i == 0 { "create" } else { "join" };
        let mut args = vec!["clusterconfig", action];
        if i == 0 {
            args.push("hosts");
        }
        args.extend([
            "--url",
            &url,
            "--ca",
            "store-ca.pem",
            "--machine",
            &name,
            "--address",
            &address,
        ]);
        let out = text(gw, &args);
        assert!(out.contains("(revision"), "{out}");
    }
    // The address a machine is known by is its own host's.
    let list = json(&gws[0], &["clusterconfig", "list"]);
    let addrs: Vec<&str> = list["groups"][0]["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].as_str().unwrap())
        .collect();
    for ns in &hosts {
        assert!(addrs.contains(&ns.inside().as_str()), "{list}");
    }

    // A commit on the third host is in force on all three.
    text(
        &gws[2],
        &[
            "smtproutes",
            "new",
            "--domain",
            "hosts.example",
            "--hosts",
            "10.9.9.9:25",
        ],
    );
    text(&gws[2], &["commit", "-m", "route from gw3"]);
    let rev = head(&gws[2]);
    for gw in &gws {
        wait_revision(gw, rev);
        assert!(text(gw, &["smtproutes"]).contains("hosts.example"));
        assert!(accepted(gw), "{} does not accept mail", gw.dir().display());
    }

    // The store killed: every member keeps accepting mail, says why and refuses commits.
    let marks: Vec<_> = gws.iter().map(|g| g.log_mark()).collect();
    drop(pg.take());
    for (gw, mark) in gws.iter().zip(marks) {
        gw.wait_for_log_after(mark, "is disconnected from the cluster's store", APPLIED);
        assert!(
            accepted(gw),
            "{} stopped accepting mail",
            gw.dir().display()
        );
        let s = json(gw, &["status"]);
        assert_eq!(s["cluster"]["connected"], false, "{s}");
        assert_eq!(s["cluster"]["revision"].as_u64(), Some(rev), "{s}");
    }
    text(&gws[0], &["deliveryconfig", "--max-concurrency", "9"]);
    let out = pvo(&gws[0], &["commit"]);
    assert!(
        !out.status.success() && out.all().contains("disconnected from the cluster's store"),
        "{}",
        out.all()
    );
}

/// `pvo ARGS` with `input` on stdin, whatever its outcome: everything it printed.
fn with_stdin(node: &Node, args: &[&str], input: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::support::pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Joining over SSH, as `applianceconfig new` logs into a gateway: the member's
/// Administrator password once; the member says where the store is. A wrong password is
/// refused naming the cause, and nothing is half-joined.
#[test]
fn a_machine_joins_over_ssh_with_an_administrators_password() {
    let pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = Node::start(
        &GatewayToml::new(&sink)
            .hostname("gw1.example.com")
            .ssh()
            .build(),
    );
    let gw2 = gateway(&sink, "gw2");
    text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "north",
            "--url",
            &url,
            "--address",
            "10.2.0.1",
        ],
    );
    let ssh = json(&gw1, &["status"])["ssh"].as_str().unwrap().to_string();
    let join = [
        "clusterconfig",
        "join",
        "--member",
        &ssh,
        "--password-stdin",
        "--address",
        "10.2.0.2",
    ];
    let out = with_stdin(&gw2, &join, "not the password\n");
    assert!(
        out.contains("Not joined") && out.contains("cannot log into the member"),
        "{out}"
    );
    assert!(text(&gw2, &["clusterconfig", "connstatus"]).contains("not in a cluster"));
    let list = json(&gw1, &["clusterconfig", "list"]);
    assert_eq!(
        list["groups"][0]["machines"].as_array().unwrap().len(),
        1,
        "{list}"
    );

    let password = crate::support::initial_password(&gw1);
    let out = crate::support::pvo_stdin(&gw2, &join, &format!("{password}\n"));
    assert!(
        out.contains("over SSH (host key SHA256:") && out.contains("joined cluster north"),
        "{out}"
    );
    wait_revision(&gw2, head(&gw1));
    let list = json(&gw1, &["clusterconfig", "list"]);
    assert_eq!(
        list["groups"][0]["machines"].as_array().unwrap().len(),
        2,
        "{list}"
    );
}

/// Scenario 5: members differ in the keys of a feature the configuration uses (DLP in a
/// mail policy): Enable is refused with the appliance's words and `diagnose` names the
/// machine, the missing key and the remedy; with the key back, nothing is in the way.
#[test]
fn members_without_the_key_of_a_feature_in_use_refuse_centralization() {
    let pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = Node::start(
        &GatewayToml::new(&sink)
            .hostname("gw1.example.com")
            .extra(
                r#"[[dlp_policy]]
name = "payment_cards"
detectors = ["payment_card"]
thresholds = { low = 1, medium = 5, high = 10, critical = 20 }
[dlp_policy.actions]
low = [{ quarantine = "Policy" }]

[[mail_policy]]
name = "DEFAULT_INCOMING"
dlp_policies = ["payment_cards"]
"#,
            )
            .build(),
    );
    let gw2 = gateway(&sink, "gw2");
    text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "south",
            "--url",
            &url,
            "--address",
            "10.3.0.1",
        ],
    );
    text(
        &gw2,
        &[
            "clusterconfig",
            "join",
            "--url",
            &url,
            "--address",
            "10.3.0.2",
        ],
    );
    text(&gw2, &["featurekey", "remove", "dlp"]);
    let scenario5 = |gw: &Node| -> Vec<Value> {
        let out = pvo(gw, &["--json", "diagnose"]);
        serde_json::from_str::<Value>(&out.stdout).unwrap()["data"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["scenario"] == 5)
            .cloned()
            .collect()
    };
    let failed = wait_until(
        APPLIED,
        || Some(scenario5(&gw1)).filter(|f| !f.is_empty()),
        || format!("no scenario 5 on gw1: {}", pvo(&gw1, &["diagnose"]).all()),
    );
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("machine gw2.example.com has no key for Data Loss Prevention (dlp)"),
        "{failed:?}"
    );
    assert!(
        failed[0]["remedy"]
            .as_str()
            .unwrap()
            .contains("featurekey add dlp"),
        "{failed:?}"
    );
    let out = pvo(&gw1, &["pvoconfig", "enable", "--manager", "10.3.0.9"]);
    assert!(
        !out.status.success()
            && out.all().contains("Unable to proceed with Centralized Policy, Virus and Outbreak Quarantines configuration as gw2.example.com in Cluster"),
        "{}",
        out.all()
    );

    text(&gw2, &["featurekey", "add", "dlp"]);
    wait_until(
        APPLIED,
        || scenario5(&gw1).is_empty().then_some(()),
        || {
            format!(
                "scenario 5 stays on gw1: {}",
                pvo(&gw1, &["diagnose"]).all()
            )
        },
    );
}
