//! The PVO settings page (Enable with the preflight shown) and the migration wizard.

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use serde_json::json;

use super::*;

// ----------------------------------------------------------------------------------
// PVO settings
// ----------------------------------------------------------------------------------

/// Checks of `diagnose` that are `pvoconfig enable`'s preflight.
pub(super) fn preflight_check(name: &str) -> bool {
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

pub(super) async fn pvo(Viewer { shared, c }: Viewer) -> HttpResponse {
    let mut b = String::new();
    let st = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    b.push_str("<section aria-labelledby=\"hs\"><h2 id=\"hs\">Status</h2>");
    b.push_str(&if st.ok { pre(&st.text) } else { refusal(&st) });
    b.push_str("</section>");
    let cfg = shared.config();
    if cfg.role == crate::config::Role::Manager && st.ok {
        let _ = write!(
            b,
            "<section aria-labelledby=\"hw\"><h2 id=\"hw\">Migration wizard</h2><p>How the gateways' local quarantines map to the central ones; an Administrator's run, committed, is what gateways need before they can enable centralization.</p>\
<form method=\"post\" action=\"/pvo/migration\">{}<button type=\"submit\" name=\"mode\" value=\"automatic\" id=\"wizard-automatic\">Automatic migration</button> <button type=\"submit\" name=\"mode\" value=\"custom\" id=\"wizard-custom\">Custom migration</button></form></section>",
            hidden("csrf", &c.csrf)
        );
    }
    if cfg.role == crate::config::Role::Gateway && st.ok && st.data["mode"] != "central" {
        // Why Enable would fail, found without changing anything: the preflight's
        // checks as `diagnose` runs them.
        let mut reason: Option<(String, String)> = None;
        let mut checks = String::new();
        if cfg.cpq.is_none() {
            reason = Some((
                "This gateway has no [cpq] section (its id, cpq_listener and certificate).".into(),
                "Add one (see docs/gateway.example.toml) and commit first.".into(),
            ));
        } else if cfg.cpq.as_ref().and_then(|c| c.manager.as_ref()).is_none() {
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
            checks.push_str("<ul class=\"checks\">");
            // The preflight decides; how each interface reaches the manager is shown too.
            for ch in list.iter().filter(|ch| {
                let n = ch["name"].as_str().unwrap_or("");
                preflight_check(n) || n.starts_with("reach ")
            }) {
                let name = ch["name"].as_str().unwrap_or("");
                let passed = ch["passed"].as_bool().unwrap_or(false);
                let _ = write!(
                    checks,
                    "<li class=\"{}\">{} {}: {}</li>",
                    if passed { "pass" } else { "fail" },
                    if passed { "PASS" } else { "FAIL" },
                    esc(name),
                    esc(ch["detail"].as_str().unwrap_or(""))
                );
                if !passed && reason.is_none() && preflight_check(name) {
                    reason = Some((
                        ch["cause"].as_str().unwrap_or("").to_string(),
                        ch["remedy"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
            checks.push_str("</ul>");
        }
        b.push_str("<section aria-labelledby=\"he\"><h2 id=\"he\">Centralize the quarantines</h2>");
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/pvo/enable\" class=\"enable\">{}<button type=\"submit\" id=\"enable\" accesskey=\"e\"{}>Enable</button>",
            hidden("csrf", &c.csrf),
            if reason.is_some() { " disabled aria-describedby=\"why\"" } else { "" },
                    );
        match &reason {
            Some((cause, remedy)) => {
                let _ = write!(
                    b,
                    " <div id=\"why\" class=\"err\" role=\"status\"><p><strong>Enable is unavailable:</strong> <span id=\"cause\">{}</span></p><p><strong>Remedy:</strong> <span id=\"remedy\">{}</span></p></div>",
                    esc(cause),
                    esc(remedy)
                );
            }
            None => b.push_str(" <span class=\"ok\">The preflight passed: enabling is pending until you commit.</span>"),
        }
        b.push_str("</form>");
        b.push_str(&checks);
        b.push_str("</section>");
    }
    html(StatusCode::OK, page(&shared, &c, "PVO settings", &b))
}

pub(super) async fn pvo_enable(Post { shared, c, .. }: Post) -> HttpResponse {
    let r = run(&shared, &c.id, "pvoconfig", json!({ "action": "enable" })).await;
    let b = format!(
        "{}<p><a href=\"/pvo\" id=\"back\">Back to the PVO settings</a></p>",
        if r.ok {
            format!("<div class=\"ok\" id=\"result\">{}</div>", pre(&r.text))
        } else {
            refusal(&r)
        }
    );
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
            &b,
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
    outcome_page(&shared, &c, &r, "<a href=\"/changes\">Pending changes (commit)</a> · <a href=\"/pvo\" id=\"back\">Back to the PVO settings</a>", ("Done", "Not done"))
}
