//! Centralization in a cluster: two gateways of one cluster (a private PostgreSQL as its
//! store) and a manager, each its own `pvo` process. The PVO settings sit at cluster
//! level; each machine is known to the manager by its machine name; Enable and the
//! manager's migration wizard refuse until every machine of that level is added on the
//! manager, naming the one that is not; then a message quarantined on the second
//! gateway reaches the manager as that gateway's.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    accepted_mid, certificates, free_port_on, free_port_on_all, json, manager_toml, parse_json,
    pvo, pvo_bin, pvo_try, run_with_timeout, ssh_port, text, wait_line, wait_until, GatewayToml,
    Namespace, Node, NodeDir, Postgres, Sink, SmtpClient, INCOMING_POLICY, OUTGOING_POLICY,
    QUARANTINE_TEST_FILTER, TRUSTED,
};

const GW1_IP: IpAddr = TRUSTED;
const GW2_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const MANAGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Long enough for a debug build on two busy cores; waits end at the event.
const WAIT: Duration = Duration::from_secs(60);

fn gateway(id: &str, ip: IpAddr, cpq_port: u16, manager_port: u16, sink: &Sink) -> Node {
    Node::start(
        &GatewayToml::new(sink)
            .hostname(&format!("{id}.cpq.test"))
            .address(ip)
            .accept_all()
            .rat(&["example.com"])
            .default_interface("Loopback")
            .quiet_bounces()
            .cpq(id, cpq_port, "local", manager_port)
            .ssh()
            .extra(QUARANTINE_TEST_FILTER)
            .extra(INCOMING_POLICY)
            .extra(OUTGOING_POLICY)
            .build(),
    )
}

/// `applianceconfig new` on the manager for `gw`, with an Administrator's `password`.
fn add(manager: &Node, gw: &Node, id: &str, ip: IpAddr, password: &str) -> String {
    let mut cmd = Command::new(pvo_bin());
    cmd.arg("--dir")
        .arg(manager.data_dir())
        .args(["applianceconfig", "new", "--id", id])
        .args(["--address", &ip.to_string()])
        .args(["--ssh-port", &ssh_port(gw).to_string()])
        .env("PVO_GATEWAY_PASSWORD", password.trim());
    let (status, out, err) = run_with_timeout(&mut cmd, WAIT);
    assert!(status.success(), "{out}{err}");
    text(manager, &["commit", "-m", &format!("add {id}")]);
    out
}

fn send(node: &Node, subject: &str) -> u64 {
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.cpq.test", 250);
    let body = format!(
        "From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: {subject}\r\n\r\nbody\r\n"
    );
    let r = c.send_message("alice@example.org", &["bob@example.com"], &body);
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();
    accepted_mid(&r)
}

fn pvo_status(node: &Node) -> Value {
    json(node, &["pvoconfig", "status"])
}

#[test]
fn centralization_at_cluster_level_covers_every_machine_or_none() {
    let pg = Postgres::start();
    let url = pg.url();
    let manager_port = free_port_on(MANAGER_IP);
    let manager = Node::start_manager(&format!(
        "{}\n[ssh]\nport = 0\n",
        manager_toml("manager", manager_port)
    ));
    // One cpq port for both: the cluster's [cpq] names it, each machine listens on its own
    // address.
    let cpq_port = free_port_on_all(&[GW1_IP, GW2_IP]);
    let (sink1, sink2) = (Sink::accepting(), Sink::accepting());
    let gw1 = gateway("gw1", GW1_IP, cpq_port, manager_port, &sink1);
    let gw2 = gateway("gw2", GW2_IP, cpq_port, manager_port, &sink2);
    let out = text(&gw1, &["clusterconfig", "create", "edge", "--url", &url]);
    assert!(out.contains("this machine (gw1)"), "{out}");
    let out = text(&gw2, &["clusterconfig", "join", "--url", &url]);
    assert!(out.contains("This machine (gw2) joined"), "{out}");

    // The cluster's [cpq] names no id: each machine is its machine name.
    let shown = text(&gw1, &["--level", "cluster", "showconfig"]);
    assert!(shown.contains("[cpq]"), "{shown}");
    assert!(!shown.contains("node_id"), "{shown}");
    let s2 = wait_until(
        WAIT,
        || {
            let s = pvo_status(&gw2);
            (s["cluster"]["pvo_machines"].as_array()?.len() == 2).then_some(s)
        },
        || format!("gw2's pvoconfig status: {:#}", pvo_status(&gw2)),
    );
    assert_eq!(s2["node_id"], "gw2", "{s2:#}");
    assert_eq!(s2["cluster"]["name"], "edge", "{s2:#}");
    assert_eq!(s2["cluster"]["pvo_level"], "cluster", "{s2:#}");
    // One user base for the cluster: gw1's administrator is every machine's.
    let password = std::fs::read_to_string(gw1.data_dir().join("run/initial-admin-password"))
        .expect("the cluster's initial admin password");
    assert!(!gw2.data_dir().join("run/initial-admin-password").exists());
    // The manager adds gw1 only.
    let out = add(&manager, &gw1, "gw1", GW1_IP, &password);
    assert!(out.contains("installed on the gateway"), "{out}");
    // A machine of the cluster cannot be added under another id.
    let mut cmd = Command::new(pvo_bin());
    cmd.arg("--dir")
        .arg(manager.data_dir())
        .args(["applianceconfig", "new", "--id", "edge-2"])
        .args(["--address", &GW2_IP.to_string()])
        .args(["--ssh-port", &ssh_port(&gw2).to_string()])
        .env("PVO_GATEWAY_PASSWORD", password.trim());
    let (status, out, err) = run_with_timeout(&mut cmd, WAIT);
    assert!(!status.success(), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("add it on the manager as gw2"),
        "{out}{err}"
    );

    // Enable on gw1 names gw2, not gw1, and how to add it.
    let manager_addr = format!("{MANAGER_IP}:{manager_port}");
    let refused = wait_until(
        WAIT,
        || {
            let (ok, said) = pvo_try(&gw1, &["pvoconfig", "enable", "--manager", &manager_addr]);
            assert!(!ok, "enabled with gw2 not added: {said}");
            (said.contains("gw2: no CPQ certificate") && !said.contains("gw1:")).then_some(said)
        },
        || "enable never named gw2 alone".to_string(),
    );
    assert!(
        refused.contains(&format!(
            "`applianceconfig new --id gw2 --address {GW2_IP}`"
        )),
        "{refused}"
    );
    // diagnose says the same (and the PVO page shows its cluster checks).
    let out = pvo(&gw1, &["diagnose", "--json"]);
    let checks = parse_json(&out.stdout)["data"]["checks"].clone();
    let pvo_check = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cluster PVO")
        .unwrap_or_else(|| panic!("{checks:#}"))
        .clone();
    assert_eq!(pvo_check["passed"], false, "{pvo_check:#}");
    assert!(
        pvo_check["detail"].as_str().unwrap().starts_with("gw2: "),
        "{pvo_check:#}"
    );
    // The manager's view and its wizard: the cluster is not covered yet.
    let st = wait_until(
        WAIT,
        || {
            let st = json(&manager, &["applianceconfig", "status"]);
            (st["clusters"][0]["missing"][0]["name"] == "gw2").then_some(st)
        },
        || {
            format!(
                "the manager never saw cluster edge: {:#}",
                json(&manager, &["applianceconfig", "status"])
            )
        },
    );
    assert_eq!(st["gateways"][0]["cluster"], "edge", "{st:#}");
    let table = text(&manager, &["applianceconfig", "status"]);
    assert!(
        table.contains("Cluster edge: centralizes gw1, gw2; added here: gw1; not added yet: gw2"),
        "{table}"
    );
    let (ok, said) = pvo_try(&manager, &["pvoconfig", "migration", "automatic"]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("Cluster edge centralizes gw1, gw2") && said.contains("add gw2"),
        "{said}"
    );

    // gw2 added: the wizard covers both, Enable works, one commit centralizes both.
    add(&manager, &gw2, "gw2", GW2_IP, &password);
    wait_until(
        WAIT,
        || {
            let st = json(&manager, &["applianceconfig", "status"]);
            st["clusters"][0]["missing"]
                .as_array()
                .is_some_and(|m| m.is_empty())
                .then_some(())
        },
        || {
            format!(
                "gw2 never counted as added: {:#}",
                json(&manager, &["applianceconfig", "status"])
            )
        },
    );
    text(&manager, &["pvoconfig", "migration", "automatic"]);
    text(&manager, &["commit", "-m", "wizard"]);
    let out = wait_until(
        WAIT,
        || {
            let (ok, said) = pvo_try(&gw1, &["pvoconfig", "enable", "--manager", &manager_addr]);
            ok.then_some(said)
        },
        || {
            format!(
                "enable stayed refused: {}",
                pvo_try(&gw1, &["pvoconfig", "enable", "--manager", &manager_addr]).1
            )
        },
    );
    assert!(out.contains("every machine at cluster is added"), "{out}");
    text(&gw1, &["commit", "-m", "centralize the cluster"]);
    for gw in [&gw1, &gw2] {
        wait_until(
            WAIT,
            || (pvo_status(gw)["mode"] == "central").then_some(()),
            || format!("not central: {:#}", pvo_status(gw)),
        );
    }
    let mid = send(&gw2, "[quarantine-test] from gw2");
    let line = wait_line(
        &gw2,
        &[
            &format!("MID {mid} RID [0] Response '2.0.0 Ok: Message "),
            " accepted'",
        ],
    );
    assert!(line.contains("accepted"), "{line}");
    wait_until(
        WAIT,
        || {
            let held = json(&manager, &["quarantine", "search", "--gateway", "gw2"]);
            (held["total"] == 1).then_some(())
        },
        || {
            format!(
                "the manager holds nothing of gw2: {:#}",
                json(&manager, &["quarantine", "search"])
            )
        },
    );
    drop(pg);
}

/// Real hosts: PostgreSQL, a manager and three gateways, each in its own network
/// namespace with its own address and the same ports (7025 everywhere: they are different
/// hosts). The store is reached over TLS; the manager adds each gateway over SSH across
/// the links; PVO enabled once at cluster level centralizes all three, and a message
/// quarantined on each reaches the manager as that gateway's.
#[test]
fn a_cluster_on_its_own_hosts_centralizes_on_a_manager_of_its_own() {
    let db = Namespace::create();
    let mgr = Namespace::create();
    let hosts: Vec<Namespace> = (0..3).map(|_| Namespace::create()).collect();
    let to_db: Vec<(String, String)> = hosts.iter().map(|h| h.link_to(&db)).collect();
    // Each gateway and the manager reach each other's addresses over their own cable.
    for h in &hosts {
        let (here, there) = h.link_to(&mgr);
        h.route(&mgr.inside(), &there);
        mgr.route(&h.inside(), &here);
    }
    let db_sides: Vec<String> = to_db.iter().map(|(_, d)| d.clone()).collect();
    let (ca, cert, key) = certificates(&db_sides);
    let pg = Postgres::start_tls_in(&db, &cert, &key);
    let manager_ip = mgr.inside();
    let manager = NodeDir::new(&format!(
        "{}\n[ssh]\nport = 0\n",
        manager_toml("manager", 7025).replace(&MANAGER_IP.to_string(), &manager_ip)
    ))
    .start_manager_in(&mgr);
    let sink = Sink::accepting();
    let mut gws = Vec::new();
    for (i, ns) in hosts.iter().enumerate() {
        let id = format!("gw{}", i + 1);
        let toml = GatewayToml::new(&sink)
            .hostname(&format!("{id}.cpq.test"))
            .address(ns.inside())
            .accept_all()
            .rat(&["example.com"])
            .default_interface("Loopback")
            .cpq(&id, 7025, "local", 7025)
            .ssh()
            .extra(QUARANTINE_TEST_FILTER)
            .extra(INCOMING_POLICY)
            .build()
            .replace(&MANAGER_IP.to_string(), &manager_ip);
        let dir = NodeDir::new(&toml);
        std::fs::write(dir.path().join("store-ca.pem"), &ca).unwrap();
        gws.push(dir.start_gateway_in(ns));
    }
    for (i, gw) in gws.iter().enumerate() {
        let url = pg.tcp_url_at(&to_db[i].1);
        let address = hosts[i].inside();
        let mut args = vec!["clusterconfig"];
        args.extend(if i == 0 {
            vec!["create", "hosts"]
        } else {
            vec!["join"]
        });
        args.extend(["--url", &url, "--ca", "store-ca.pem", "--address", &address]);
        let out = text(gw, &args);
        assert!(out.contains(&format!("(gw{})", i + 1)), "{out}");
    }
    // The manager adds each over SSH (the cluster's administrator), then runs its wizard.
    let password = std::fs::read_to_string(gws[0].data_dir().join("run/initial-admin-password"))
        .expect("the cluster's initial admin password");
    for (i, gw) in gws.iter().enumerate() {
        add(
            &manager,
            gw,
            &format!("gw{}", i + 1),
            hosts[i].inside().parse().unwrap(),
            &password,
        );
    }
    let manager_addr = format!("{manager_ip}:7025");
    wait_until(
        WAIT,
        || {
            let st = json(&manager, &["applianceconfig", "status"]);
            let c = &st["clusters"][0];
            (c["name"] == "hosts"
                && c["machines"].as_array()?.len() == 3
                && c["missing"].as_array()?.is_empty())
            .then_some(())
        },
        || {
            format!(
                "the manager never saw all of cluster hosts: {:#}",
                json(&manager, &["applianceconfig", "status"])
            )
        },
    );
    text(&manager, &["pvoconfig", "migration", "automatic"]);
    text(&manager, &["commit", "-m", "wizard"]);
    // Enabled once, on the third host, at cluster level.
    wait_until(
        WAIT,
        || {
            let (ok, _) = pvo_try(
                &gws[2],
                &["pvoconfig", "enable", "--manager", &manager_addr],
            );
            ok.then_some(())
        },
        || {
            pvo_try(
                &gws[2],
                &["pvoconfig", "enable", "--manager", &manager_addr],
            )
            .1
        },
    );
    text(&gws[2], &["commit", "-m", "centralize the hosts"]);
    for (i, gw) in gws.iter().enumerate() {
        wait_until(
            WAIT,
            || (pvo_status(gw)["mode"] == "central").then_some(()),
            || format!("gw{} is not central: {:#}", i + 1, pvo_status(gw)),
        );
        let mut c = SmtpClient::open(gw.addr(), None);
        c.expect("EHLO client.test", 250);
        let subject = format!("[quarantine-test] on gw{}", i + 1);
        let body = format!(
            "From: <a@client.test>\r\nTo: <b@example.com>\r\nSubject: {subject}\r\n\r\nbody\r\n"
        );
        let r = c.send_message("a@client.test", &["b@example.com"], &body);
        assert_eq!(r.code, 250, "{}", r.raw());
        c.quit();
    }
    for i in 1..=3 {
        let id = format!("gw{i}");
        wait_until(
            WAIT,
            || {
                let held = json(&manager, &["quarantine", "search", "--gateway", &id]);
                (held["total"] == 1).then_some(())
            },
            || {
                format!(
                    "the manager holds nothing of {id}: {:#}",
                    json(&manager, &["applianceconfig", "status"])
                )
            },
        );
    }
}
