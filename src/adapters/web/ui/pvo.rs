//! The PVO settings page (Enable with the preflight shown) and the migration wizard.

use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use serde_json::{json, Value};

use super::*;

// ----------------------------------------------------------------------------------
// PVO settings
// ----------------------------------------------------------------------------------

/// Checks of `diagnose` that are `pvoconfig enable`'s preflight (with several managers,
/// each check's name ends with the manager it is about: `manager ready (10.0.0.2:7025)`).
pub(super) fn preflight_check(name: &str) -> bool {
    let name = name.split(" (").next().unwrap_or(name);
    [
        "CPQ certificate",
        "manager address",
        "connect to the manager",
        "manager greeting",
        "TLS with the manager",
        "manager ready",
    ]
    .contains(&name)
}

/// Of `diagnose`'s checks, those Enable depends on — the preflight and, in a cluster, the
/// cluster's reasons (its store, levels, feature keys, interfaces, every machine added on
/// the manager) — with how each interface reaches the manager; and the first failure's
/// cause and remedy, which keep Enable greyed.
fn enable_checks(list: Vec<Value>) -> (Option<(String, String)>, Vec<Value>) {
    let decides = |n: &str| preflight_check(n) || n == "cluster" || n.starts_with("cluster ");
    let shown: Vec<Value> = list
        .into_iter()
        .filter(|ch| {
            let n = ch["name"].as_str().unwrap_or("");
            decides(n) || n.starts_with("reach ")
        })
        .collect();
    let reason = shown
        .iter()
        .find(|ch| {
            !ch["passed"].as_bool().unwrap_or(false) && decides(ch["name"].as_str().unwrap_or(""))
        })
        .map(|ch| {
            (
                ch["cause"].as_str().unwrap_or("").to_string(),
                ch["remedy"].as_str().unwrap_or("").to_string(),
            )
        });
    (reason, shown)
}

pub(super) async fn pvo(Viewer { shared, c }: Viewer) -> HttpResponse {
    let st = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    let cfg = shared.config.current();
    let wizard = cfg.role == crate::core::config::Role::Manager && st.ok;
    let mut enable = None;
    if cfg.role == crate::core::config::Role::Gateway && st.ok && st.data["mode"] != "central" {
        // Why Enable would fail, found without changing anything: the preflight's
        // checks as `diagnose` runs them.
        let mut reason: Option<(String, String)> = None;
        let mut checks: Option<Vec<Value>> = None;
        if cfg.cpq.is_none() {
            reason = Some((
                "This gateway has no [cpq] section (its id, cpq_listener and certificate).".into(),
                "Add one (see docs/gateway.example.toml) and commit first.".into(),
            ));
        } else if cfg.cpq.as_ref().and_then(|c| c.manager()).is_none() {
            reason = Some((
                "No manager address is configured.".into(),
                "Set the manager's CPQ address: `pvoconfig enable --manager HOST[:PORT]`.".into(),
            ));
        } else {
            drop(cfg);
            let d = run(&shared, &c.id, "diagnose", json!({})).await;
            let list = d.data["checks"].as_array().cloned().unwrap_or_default();
            if list.is_empty() && !d.ok {
                reason = Some((
                    d.text.trim().to_string(),
                    "Ask an Administrator or Operator.".into(),
                ));
            }
            let (why, shown) = enable_checks(list);
            if reason.is_none() {
                reason = why;
            }
            checks = Some(shown);
        }
        enable = Some(enable_section(&c.csrf, reason.as_ref(), checks.as_deref()));
    }
    let b = html! {
        section aria-labelledby="hs" {
            h2 id="hs" { "Status" }
            @if st.ok { (pre(&st.text)) } @else { (refusal(&st)) }
        }
        @if wizard {
            section aria-labelledby="hw" {
                h2 id="hw" { "Migration wizard" }
                p { "How the gateways' local quarantines map to the central ones; an Administrator's run, committed, is what gateways need before they can enable centralization." }
                form method="post" action="/pvo/migration" {
                    (hidden("csrf", &c.csrf))
                    button type="submit" name="mode" value="automatic" id="wizard-automatic" { "Automatic migration" }
                    " "
                    button type="submit" name="mode" value="custom" id="wizard-custom" { "Custom migration" }
                }
            }
        }
        @if let Some(e) = enable { (e) }
    };
    html(StatusCode::OK, page(&shared, &c, "PVO settings", b))
}

/// Enable on a gateway: disabled with the `reason` (cause, remedy) it would fail, and
/// the preflight's `checks` when they were run.
fn enable_section(
    csrf: &str,
    reason: Option<&(String, String)>,
    checks: Option<&[Value]>,
) -> Markup {
    html! {
        section aria-labelledby="he" {
            h2 id="he" { "Centralize the quarantines" }
            form method="post" action="/pvo/enable" class="enable" {
                (hidden("csrf", csrf))
                button type="submit" id="enable" accesskey="e" disabled[reason.is_some()] aria-describedby=[reason.map(|_| "why")] { "Enable" }
                @match reason {
                    Some((cause, remedy)) => {
                        " "
                        div id="why" class="err" role="status" {
                            p { strong { "Enable is unavailable:" } " " span id="cause" { (cause) } }
                            p { strong { "Remedy:" } " " span id="remedy" { (remedy) } }
                        }
                    }
                    None => {
                        " "
                        span class="ok" { "The preflight passed: enabling is pending until you commit." }
                    }
                }
            }
            @if let Some(checks) = checks {
                ul class="checks" {
                    @for ch in checks {
                        @let passed = ch["passed"].as_bool().unwrap_or(false);
                        li class=(if passed { "pass" } else { "fail" }) {
                            (if passed { "PASS" } else { "FAIL" }) " "
                            (ch["name"].as_str().unwrap_or("")) ": " (ch["detail"].as_str().unwrap_or(""))
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn pvo_enable(Post { shared, c, .. }: Post) -> HttpResponse {
    let r = run(&shared, &c.id, "pvoconfig", json!({ "action": "enable" })).await;
    let b = html! {
        @if r.ok {
            div class="ok" id="result" { (pre(&r.text)) }
        } @else {
            (refusal(&r))
        }
        p { a href="/pvo" id="back" { "Back to the PVO settings" } }
    };
    html(
        if r.ok {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        page(
            &shared,
            &c,
            if r.ok {
                "Enabled (pending)"
            } else {
                "Not enabled"
            },
            b,
        ),
    )
}

pub(super) async fn pvo_migration(Post { shared, c, form }: Post) -> HttpResponse {
    let mode = field(&form, "mode").unwrap_or("show");
    let r = run(
        &shared,
        &c.id,
        "pvoconfig",
        json!({ "action": "migration", "mode": mode }),
    )
    .await;
    let links = html! {
        a href="/changes" { "Pending changes (commit)" } " · "
        a href="/pvo" id="back" { "Back to the PVO settings" }
    };
    outcome_page(&shared, &c, &r, links, ("Done", "Not done"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>\"'";

    #[test]
    fn cluster_reasons_grey_out_enable_like_the_preflight() {
        let checks = vec![
            json!({ "name": "listeners", "passed": false, "cause": "suspended", "remedy": "resume" }),
            json!({ "name": "cluster", "passed": true, "detail": "connected" }),
            json!({ "name": "cluster PVO", "passed": false, "detail": "gw2: no CPQ certificate",
                    "cause": "every machine must be added", "remedy": "`applianceconfig new --id gw2`" }),
            json!({ "name": "manager ready", "passed": false, "cause": "later", "remedy": "x" }),
            json!({ "name": "reach the manager from Data 1", "passed": true }),
        ];
        let (reason, shown) = enable_checks(checks);
        assert_eq!(
            reason,
            Some((
                "every machine must be added".to_string(),
                "`applianceconfig new --id gw2`".to_string()
            ))
        );
        let names: Vec<&str> = shown.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "cluster",
                "cluster PVO",
                "manager ready",
                "reach the manager from Data 1"
            ]
        );
        let page = enable_section("t", reason.as_ref(), Some(&shown)).into_string();
        assert!(
            page.contains("FAIL cluster PVO: gw2: no CPQ certificate"),
            "{page}"
        );
        assert!(page.contains("disabled"), "{page}");
    }

    #[test]
    fn enable_shows_the_escaped_reason_and_checks() {
        let reason = (EVIL.to_string(), EVIL.to_string());
        let checks = [
            json!({ "name": EVIL, "passed": false, "detail": EVIL }),
            json!({ "name": "ok", "passed": true, "detail": "" }),
        ];
        let p = enable_section("t", Some(&reason), Some(&checks)).into_string();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        assert!(
            p.contains("accesskey=\"e\" disabled aria-describedby=\"why\">Enable</button>"),
            "{p}"
        );
        assert!(
            p.contains("<span id=\"cause\">&lt;script&gt;alert(1)&lt;/script&gt;&quot;'</span>"),
            "{p}"
        );
        assert!(p.contains("<li class=\"fail\">FAIL &lt;script&gt;"), "{p}");
        assert!(p.contains("<li class=\"pass\">PASS ok: </li>"), "{p}");
        let p = enable_section("t", None, None).into_string();
        assert!(
            p.contains("accesskey=\"e\">Enable</button> <span class=\"ok\">"),
            "{p}"
        );
        assert!(!p.contains("checks"), "{p}");
    }
}
