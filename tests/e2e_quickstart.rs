//! A fresh `pvo quickstart` passes its own `pvo diagnose` on both nodes: it leaves the
//! pair as the appliance's setup procedure does (PVO service on the manager, the gateway added,
//! the migration wizard run and committed by an Administrator, the gateway enabled). On
//! the gateway, which is central already, diagnose reports the live link to the manager
//! rather than the enable preflight's wizard check.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// `pvo --dir DIR diagnose --json`: (exit success, the answer).
fn diagnose(dir: &std::path::Path) -> (bool, Value) {
    let out = Command::new(pvo_bin())
        .arg("--dir")
        .arg(dir)
        .args(["diagnose", "--json"])
        .output()
        .expect("run pvo");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn failing(v: &Value) -> Vec<String> {
    v["data"]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {v:#}"))
        .iter()
        .filter(|c| c["passed"] != true)
        .map(|c| format!("{}: {} ({})", c["name"], c["detail"], c["cause"]))
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_fresh_quickstart_passes_diagnose_on_both_nodes() {
    let Quickstart { node, data, .. } = start_quickstart(&[]);
    let (gateway, manager) = (data.join("gateway"), data.join("manager"));
    // quickstart has finished its setup once the banner is out.
    let stdout = node.dir().join("node.stdout.log");
    wait_until(
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(&stdout)
                .ok()?
                .contains("Stop with Ctrl-C")
                .then_some(())
        },
        || format!("the quickstart banner in {}", stdout.display()),
    );

    let (ok, m) = diagnose(&manager);
    assert!(
        ok && failing(&m).is_empty(),
        "manager: {:#?}\n{m:#}",
        failing(&m)
    );
    assert!(
        names(&m).iter().any(|n| n == "ready for gw1"),
        "{:?}",
        names(&m)
    );
    // The wizard was run and committed by an Administrator, as the appliance's procedure asks.
    let wizard = pvo_json_in(&manager, &["pvoconfig", "migration", "show"]);
    assert_eq!(wizard["data"]["migration"]["set_by"], "admin", "{wizard:#}");
    let pending = Command::new(pvo_bin())
        .arg("--dir")
        .arg(&manager)
        .args(["showconfig", "--pending"])
        .output()
        .unwrap();
    let pending = String::from_utf8_lossy(&pending.stdout).to_string()
        + &String::from_utf8_lossy(&pending.stderr);
    assert!(
        !pending.contains("migration"),
        "nothing of the wizard is left pending:\n{pending}"
    );

    let (ok, g) = diagnose(&gateway);
    assert!(
        ok && failing(&g).is_empty(),
        "gateway: {:#?}\n{g:#}",
        failing(&g)
    );
    // A central gateway: the live link (reach, TLS, backlog), not the enable preflight.
    let n = names(&g);
    for want in [
        "connect to the manager",
        "TLS with the manager",
        "manager link",
        "the.cpq.host queue",
    ] {
        assert!(n.iter().any(|x| x == want), "{want} in {n:?}");
    }
    assert!(
        !n.iter().any(|x| x == "manager ready"),
        "a central gateway is past the enable check: {n:?}"
    );

    // The wizard changed on the manager and not committed: the manager's diagnose says
    // so (scenario 2); the central gateway's link is unaffected, and its diagnose passes.
    pvo_json_in(
        &manager,
        &[
            "pvoconfig",
            "migration",
            "custom",
            "--map",
            "gw1:Policy=Virus",
        ],
    );
    let (ok, m) = diagnose(&manager);
    assert!(!ok, "{m:#}");
    assert!(
        failing(&m).iter().any(|f| f.contains("not committed")),
        "{:#?}",
        failing(&m)
    );
    let (ok, g) = diagnose(&gateway);
    assert!(
        ok && failing(&g).is_empty(),
        "gateway: {:#?}\n{g:#}",
        failing(&g)
    );
}
