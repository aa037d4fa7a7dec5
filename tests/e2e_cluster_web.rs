//! `clusterconfig` and `clustercheck` over the REST API and on the web UI's Cluster page,
//! against a gateway with its web server on and a private PostgreSQL
//! (`support::Postgres`). REST: connstatus and list on a machine in no cluster, a
//! cluster created with an Administrator's token, then list, connstatus and check as
//! the command answers them, a group added, the same change refused 403 for an
//! Operator's token (Monitor, not Configure), 409 for a name in use, 400 for a body the
//! document calls invalid; schemathesis against the reads and membership changes of a
//! member.
//! UI, in headless Chromium: the page says the machine is in no cluster, creates one
//! from its form, lists it with this machine connected, adds a group, disconnects the
//! machine (the page then says so loudly, and that it runs its last good
//! configuration) and reconnects it; an Operator sees the page without its forms.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const APPLIED: Duration = Duration::from_secs(15);

fn gateway(sink: &Sink, name: &str) -> Node {
    Node::start(
        &GatewayToml::new(sink)
            .hostname(&format!("{name}.example.com"))
            .web()
            .build(),
    )
}

fn get(web: std::net::SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let (code, body) = https(web, "GET", path, Some(token), None);
    (code, parse_json(&body))
}

fn post(web: std::net::SocketAddr, path: &str, token: &str, body: Value) -> (u16, Value) {
    let (code, out) = https(web, "POST", path, Some(token), Some(&body.to_string()));
    (code, parse_json(&out))
}

/// Waits until `machine` is listed connected (the store sees its session).
fn wait_listed_connected(web: std::net::SocketAddr, token: &str, machine: &str) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        APPLIED,
        || {
            let (code, list) = get(web, "/api/v1/cluster", token);
            *last.borrow_mut() = list.clone();
            let connected = list["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["machines"].as_array().cloned().unwrap_or_default())
                .any(|m| m["name"] == machine && m["connected"] == true);
            (code == 200 && connected).then_some(list)
        },
        || format!("{machine} never listed connected: {}", last.borrow()),
    )
}

#[test]
fn rest_cluster_list_connstatus_check_and_addgroup_by_role() {
    let pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = gateway(&sink, "gw1");
    let web = web_addr(&gw1);
    let admin = new_token(&gw1, "admin");
    new_user(&gw1, "otto", "Operator", "otto-password-1");
    let otto = new_token(&gw1, "otto");

    // In no cluster: connstatus says so (200), list is the command's 503.
    let (code, got) = get(web, "/api/v1/cluster/connstatus", &admin);
    assert_eq!((code, &got), (200, &json!({ "cluster": false })));
    let (code, got) = get(web, "/api/v1/cluster", &admin);
    assert_eq!(code, 503, "{got}");
    assert!(
        got["error"].as_str().unwrap().contains("not in a cluster"),
        "{got}"
    );
    let (code, got) = get(web, "/api/v1/cluster/check", &otto);
    assert_eq!(code, 503, "{got}");

    // An Operator may not create one; an Administrator may.
    let create = json!({ "name": "east", "url": url, "machine": "gw1", "address": "10.0.0.1" });
    let (code, got) = post(web, "/api/v1/cluster/create", &otto, create.clone());
    assert_eq!(code, 403, "{got}");
    let (code, got) = post(web, "/api/v1/cluster/create", &admin, create.clone());
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["cluster"], "east", "{got}");
    assert_eq!(got["machine"], "gw1", "{got}");
    assert!(got["revision"].as_u64().unwrap() >= 1, "{got}");
    let (code, got) = post(web, "/api/v1/cluster/create", &admin, create);
    assert_eq!(code, 409, "{got}");

    // list, connstatus and check, as the command answers them.
    let list = wait_listed_connected(web, &otto, "gw1");
    assert_eq!(list["cluster"], "east", "{list}");
    assert_eq!(list["machine"], "gw1", "{list}");
    assert_eq!(list["fresh"], true, "{list}");
    let cli = json(&gw1, &["clusterconfig", "list"]);
    assert_eq!(list["revision"], cli["revision"], "{list} {cli}");
    let main = &list["groups"][0];
    assert_eq!(main["name"], "Main_Group", "{list}");
    assert_eq!(main["machines"][0]["address"], "10.0.0.1", "{list}");
    assert_eq!(main["machines"][0]["revision"], list["revision"], "{list}");
    let (code, got) = get(web, "/api/v1/cluster/connstatus", &otto);
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["cluster"], true, "{got}");
    let s = &got["status"];
    assert_eq!(s["machine"], "gw1", "{got}");
    assert_eq!(s["connected"], true, "{got}");
    assert_eq!(s["held"], false, "{got}");
    assert!(s["why"].is_null() && s["since"].is_u64(), "{got}");
    let (code, got) = get(web, "/api/v1/cluster/check", &otto);
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["cluster"], "east", "{got}");
    assert!(got["findings"].is_array(), "{got}");

    // Where the store is, for a joining machine: an Administrator's only.
    let (code, got) = get(web, "/api/v1/cluster/joininfo", &otto);
    assert_eq!(code, 403, "{got}");
    let (code, got) = get(web, "/api/v1/cluster/joininfo", &admin);
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["url"], url.as_str(), "{got}");
    assert_eq!(got["machine"], "gw1", "{got}");

    // A change: refused for the Operator (the audit trail says so), done for the
    // Administrator, refused again once the name is in use.
    let (code, got) = post(
        web,
        "/api/v1/cluster/addgroup",
        &otto,
        json!({ "name": "west" }),
    );
    assert_eq!(code, 403, "{got}");
    let audit = json(&gw1, &["auditlog", "--user", "otto"]);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "refused"
                && e["command"].as_str().unwrap_or("").contains("addgroup")),
        "{audit:#}"
    );
    let (code, got) = post(
        web,
        "/api/v1/cluster/addgroup",
        &admin,
        json!({ "name": "west" }),
    );
    assert_eq!(
        (code, &got),
        (200, &json!({ "changed": true, "what": "group west added" }))
    );
    let (code, got) = post(
        web,
        "/api/v1/cluster/addgroup",
        &admin,
        json!({ "name": "west" }),
    );
    assert_eq!(code, 409, "{got}");
    let (_, list) = get(web, "/api/v1/cluster", &admin);
    let groups: Vec<&str> = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"west") && groups.contains(&"Main_Group"),
        "{list}"
    );
    // Bodies the document calls invalid are refused before any command runs.
    for body in [
        json!({}),
        json!({ "name": "a b" }),
        json!({ "name": "west", "url": "x" }),
        json!({ "name": 7 }),
    ] {
        let (code, got) = post(web, "/api/v1/cluster/addgroup", &admin, body.clone());
        assert_eq!(code, 400, "{body} {got}");
    }
    // A machine moved to the new group, listed there.
    let (code, got) = post(
        web,
        "/api/v1/cluster/setgroup",
        &admin,
        json!({ "machine": "gw1", "group": "west" }),
    );
    assert_eq!(code, 200, "{got}");
    let (_, list) = get(web, "/api/v1/cluster", &admin);
    let west = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "west")
        .cloned()
        .unwrap();
    assert_eq!(west["machines"][0]["name"], "gw1", "{list}");
    // Held disconnected and back, as the API says it.
    let (code, got) = post(web, "/api/v1/cluster/disconnect", &admin, json!({}));
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["held"], true, "{got}");
    assert_eq!(got["status"]["held"], true, "{got}");
    // The member's loop lets go of the store right after.
    wait_until(
        APPLIED,
        || {
            let (_, got) = get(web, "/api/v1/cluster/connstatus", &admin);
            (got["status"]["connected"] == false).then_some(())
        },
        || "gw1 never disconnected".to_string(),
    );
    let (code, got) = post(
        web,
        "/api/v1/cluster/addgroup",
        &admin,
        json!({ "name": "north" }),
    );
    assert_eq!(code, 503, "{got}");
    let (code, got) = post(web, "/api/v1/cluster/reconnect", &admin, json!({}));
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["held"], false, "{got}");
    wait_listed_connected(web, &admin, "gw1");

    // schemathesis on a member: the answers of the reads and of the membership changes
    // conform to the document, bodies included (removemachine, deletegroup and the
    // settings moves are left out: they would take the cluster apart under it).
    let report = crate::e2e_api::schemathesis(
        web,
        &format!("Authorization: Bearer {admin}"),
        "Administrator on a cluster member",
        ("examples,fuzzing", 5),
        &[
            "--include-path-regex",
            "^/api/v1/cluster(/(connstatus|check|joininfo|addgroup|setgroup|renamegroup|disconnect|reconnect|jointoken|jointoken-revoke|jointokens))?$",
        ],
    );
    assert!(report.contains("Selected: 12/"), "{report}");
    drop(pg);
}

async fn login(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
    b.text_with("main h1", "Dashboard").await;
}

/// Opens the Cluster page until `#connection` says `needle` (the member's loop may
/// still be connecting); its text.
async fn cluster_page_until(b: &Browser, base: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + APPLIED;
    loop {
        b.goto(&format!("{base}/cluster")).await;
        let t = b.text("#connection").await;
        if t.contains(needle) || std::time::Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn web_ui_cluster_page_creates_a_cluster_lists_it_adds_a_group_and_disconnects() {
    let pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = gateway(&sink, "gw1");
    let base = format!("https://{}", web_addr(&gw1));
    let pw = initial_password(&gw1);
    new_user(&gw1, "otto", "Operator", "otto-password-1");

    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &pw).await;
        b.click("a[href='/cluster']").await;
        let t = b.text_with("#not-in-cluster", "not in a cluster").await;
        assert!(t.contains("not in a cluster"), "{t}");
        assert_eq!(b.all("#join").await.len(), 1);

        // Create the cluster from the page.
        b.fill("#c-name", "east").await;
        b.fill("#c-url", &url).await;
        b.fill("#c-machine", "gw1").await;
        b.fill("#c-address", "10.0.0.1").await;
        b.click("#create-cluster").await;
        let r = b.text_with("#result", "Cluster east created").await;
        assert!(
            r.contains("Cluster east created with this machine (gw1)"),
            "{r}"
        );

        // Listed, connected, at its revision; the check has run.
        let t = cluster_page_until(&b, &base, "is connected").await;
        assert!(t.contains("is connected") && t.contains("gw1"), "{t}");
        let members = b.text("#members").await;
        assert!(
            members.contains("Main_Group")
                && members.contains("gw1 (this machine)")
                && members.contains("10.0.0.1"),
            "{members}"
        );
        let findings = b.text("#findings").await;
        assert!(!findings.is_empty(), "{findings}");
        let source = b.source().await;
        assert!(
            !source.contains("<script>") && !source.contains(" style="),
            "{source}"
        );

        // Add a group.
        b.fill("#a-name", "west").await;
        b.click("#add-group").await;
        let r = b.text_with("#result", "group west added").await;
        assert!(r.contains("Cluster: group west added."), "{r}");
        b.click("#back").await;
        let members = b.text_with("#members", "west").await;
        assert!(
            members.contains("west") && members.contains("no machines"),
            "{members}"
        );
        assert_eq!(
            json(&gw1, &["clusterconfig", "list"])["groups"][1]["name"],
            "west"
        );

        // Disconnected: the page says so, and what the machine runs meanwhile.
        b.click("#disconnect-machine").await;
        b.text_with("#result", "disconnected from the cluster")
            .await;
        b.click("#back").await;
        let t = b.text_with("#connection", "DISCONNECTED").await;
        assert!(
            t.contains("DISCONNECTED") && t.contains("last good configuration (revision"),
            "{t}"
        );
        b.click("#reconnect-machine").await;
        b.text_with("#result", "connected to the cluster again")
            .await;
        let t = cluster_page_until(&b, &base, "is connected").await;
        assert!(t.contains("is connected"), "{t}");

        // An Operator sees the cluster, not the forms.
        b.click("header form button[type=submit]").await;
        b.find("#password").await;
        login(&b, &base, "otto", "otto-password-1").await;
        b.goto(&format!("{base}/cluster")).await;
        let members = b.text_with("#members", "gw1").await;
        assert!(members.contains("gw1"), "{members}");
        assert!(b.all("#addgroup").await.is_empty());
        assert!(b.all("#disconnect").await.is_empty());
        b.close().await;
    });
    drop(pg);
}
