//! `featurekey`: the feature keys of this machine — `list` (monitor), `add` (install or
//! renew) and `remove` (configure). Keys are machine-only and take effect at once (no
//! commit): a feature without an active key is off here, and the pipeline skips its
//! engine (`core::feature_keys`). The same rows go into `status` and `showconfig`.

use std::sync::Arc;

use serde_json::Value;

use super::command::{text, CommandError, FeatureKeyAction, FeatureKeyArgs};
use super::replies::{self, FeatureKeysReply, FeatureName, FeatureRow};
use crate::commands::protocol::Response;
use crate::core::feature_keys::{self as fk, Feature, FeatureKey};
use crate::core::state::Handles;
use crate::core::users::Identity;

use crate::core::clock::unix_now as now;

impl From<&Feature> for FeatureName {
    fn from(f: &Feature) -> FeatureName {
        match f {
            Feature::Antivirus => FeatureName::Antivirus,
            Feature::Outbreak => FeatureName::Outbreak,
            Feature::Dlp => FeatureName::Dlp,
        }
    }
}

/// What a feature's row says: `on`, `off`, or why a feature the configuration uses is
/// off, with the command that turns it on.
fn state(f: &Feature, key: Option<&FeatureKey>, configured: bool, at: u64) -> String {
    let add = format!("(`featurekey add {}`)", f.name());
    match key {
        Some(k) if k.active(at) => "on".into(),
        Some(k) if configured => format!(
            "configured but off: the feature key expired at {} GMT {add}",
            fk::valid_until(k.expires.unwrap_or(at))
        ),
        None if configured => format!("configured but off: no feature key {add}"),
        Some(_) => "off: the feature key expired".into(),
        None => "off: no feature key".into(),
    }
}

/// Every feature's row at `at`, and whether the keys are recorded in the data directory.
pub fn rows(shared: &Handles, at: u64) -> FeatureKeysReply {
    let (keys, recorded) = shared.scan.features.list();
    let used = fk::used_by(&shared.config.current().scanning);
    let features = Feature::ALL
        .iter()
        .map(|f| {
            let key = keys.iter().find(|k| &k.feature == f);
            let configured = used.contains(f);
            FeatureRow {
                feature: FeatureName::from(f),
                title: f.title().into(),
                keyed: key.is_some(),
                key: key.map(|k| k.key.clone()),
                expires: key.and_then(|k| k.expires),
                valid_until: key.and_then(|k| k.expires).map(fk::valid_until),
                active: key.is_some_and(|k| k.active(at)),
                configured,
                state: state(f, key, configured, at),
            }
        })
        .collect();
    FeatureKeysReply { features, recorded }
}

/// The rows as the text tables show them (`featurekey`, `status`, `showconfig`).
pub fn table(r: &FeatureKeysReply) -> String {
    let mut t = format!(
        "    {:<24}{:<36}{:<26}{}\n",
        "Feature", "Key", "Valid until", "State"
    );
    for f in &r.features {
        t.push_str(&format!(
            "    {:<24}{:<36}{:<26}{}\n",
            f.title,
            f.key.as_deref().unwrap_or("-"),
            match (&f.valid_until, f.keyed) {
                (Some(u), _) => format!("{u} GMT"),
                (None, true) => "no expiry".into(),
                (None, false) => "-".into(),
            },
            f.state
        ));
    }
    t
}

/// The feature keys' section of `status` and `showconfig`.
pub fn section(r: &FeatureKeysReply) -> String {
    let mut t = String::from("Feature keys:\n");
    t.push_str(&table(r));
    if !r.recorded {
        t.push_str("    (no feature keys recorded: every feature is on, without expiry)\n");
    }
    t
}

/// `showconfig` with the machine's feature keys: a section of its text and
/// `feature_keys` in its data (they are machine-only, outside the configuration).
pub fn with_features(shared: &Handles, mut resp: Response) -> Response {
    // Only a configuration shown (not "no changes pending").
    if !resp.ok || !resp.data.is_object() {
        return resp;
    }
    let r = rows(shared, now());
    if !resp.text.ends_with('\n') {
        resp.text.push('\n');
    }
    resp.text.push('\n');
    resp.text.push_str(&section(&r));
    if let Value::Object(m) = &mut resp.data {
        m.insert("feature_keys".into(), replies::data(&r));
    }
    resp
}

pub async fn featurekey(shared: &Arc<Handles>, a: &FeatureKeyArgs, id: &Identity) -> Response {
    let (s, a, i) = (shared.clone(), a.clone(), id.clone());
    tokio::task::spawn_blocking(move || featurekey_now(&s, &a, &i))
        .await
        .unwrap_or_else(|e| Err(format!("featurekey failed inside the node: {e}").into()))
        .unwrap_or_else(Response::from)
}

fn featurekey_now(
    shared: &Handles,
    a: &FeatureKeyArgs,
    id: &Identity,
) -> Result<Response, CommandError> {
    let at = now();
    let only_feature = |what: &str| -> Result<(), CommandError> {
        if text(&a.key).is_some() || text(&a.expires).is_some() || a.days.is_some() {
            return Err(format!(
                "featurekey {what} takes only the feature (no key, --expires or --days)."
            )
            .into());
        }
        Ok(())
    };
    let feature = |what: &str| -> Result<Feature, CommandError> {
        let name = text(&a.feature).ok_or_else(|| {
            CommandError::invalid(format!(
                "featurekey {what}: give the feature: {}.",
                fk::allowed()
            ))
        })?;
        Ok(fk::parse_feature(name)?)
    };
    let keys = &shared.scan.features;
    let by = id.user.as_str();
    let mut text_out = String::new();
    match a.action {
        FeatureKeyAction::List => {
            if text(&a.feature).is_some()
                || text(&a.key).is_some()
                || text(&a.expires).is_some()
                || a.days.is_some()
            {
                return Err("featurekey list takes no arguments.".into());
            }
        }
        FeatureKeyAction::Add => {
            let f = feature("add")?;
            let key = match text(&a.key) {
                Some(k) => {
                    fk::check_key(k)?;
                    k.to_string()
                }
                None => {
                    let mut r = [0u8; 8];
                    crate::core::users::random_bytes(&mut r);
                    fk::new_key(&f, r)
                }
            };
            let expires = fk::expiry(text(&a.expires), a.days, at)?;
            let added = keys
                .add(
                    FeatureKey {
                        feature: f.clone(),
                        key: key.clone(),
                        expires,
                    },
                    at,
                )
                .map_err(|e| {
                    CommandError::unavailable(format!(
                        "The feature key could not be recorded: {e:#}"
                    ))
                })?;
            let until = match expires {
                Some(t) => format!("valid until {} GMT", fk::valid_until(t)),
                None => "no expiry".into(),
            };
            let renewed = added.replaced.is_some();
            shared
                .mail
                .log
                .emit(crate::core::events::Event::FeatureKeyInstalled {
                    feature: f.title(),
                    key: &key,
                    until: &until,
                    by: &by,
                    renewed,
                });
            text_out = format!(
                "Feature key for {} {} (key {key}, {until}). {} is on on this machine.\n",
                f.title(),
                if renewed { "renewed" } else { "installed" },
                f.title()
            );
        }
        FeatureKeyAction::Remove => {
            let f = feature("remove")?;
            only_feature("remove")?;
            let gone = keys.remove(&f, at).map_err(|e| {
                CommandError::unavailable(format!("The feature key could not be recorded: {e:#}"))
            })?;
            if gone.is_none() {
                return Err(CommandError::not_found(format!(
                    "{} has no feature key on this machine.",
                    f.title()
                )));
            }
            shared
                .mail
                .log
                .emit(crate::core::events::Event::FeatureKeyRemoved {
                    feature: f.title(),
                    command: f.name(),
                    by: &by,
                });
            text_out = format!(
                "Feature key for {} removed. {} is off on this machine.\n",
                f.title(),
                f.title()
            );
            if fk::used_by(&shared.config.current().scanning).contains(&f) {
                text_out.push_str(&format!(
                    "The configuration uses it: its mail policies skip {} until `featurekey add {}`.\n",
                    f.title(),
                    f.name()
                ));
            }
        }
    }
    let r = rows(shared, at);
    if !text_out.is_empty() {
        text_out.push('\n');
    }
    text_out.push_str("Feature keys of this machine:\n");
    text_out.push_str(&table(&r));
    if !r.recorded {
        text_out.push_str("No feature keys recorded: every feature is on, without expiry (the first `featurekey add` or `remove` records the full set).\n");
    }
    Ok(Response::ok(text_out, replies::data(&r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_name_the_command_that_turns_a_feature_on() {
        let k = |expires| FeatureKey {
            feature: Feature::Dlp,
            key: "k".into(),
            expires,
        };
        assert_eq!(state(&Feature::Dlp, Some(&k(None)), true, 10), "on");
        assert_eq!(
            state(&Feature::Dlp, None, true, 10),
            "configured but off: no feature key (`featurekey add dlp`)"
        );
        assert_eq!(
            state(&Feature::Dlp, Some(&k(Some(1_830_297_600))), true, 1_830_297_600),
            "configured but off: the feature key expired at 2027-12-31 23:59:59 GMT (`featurekey add dlp`)"
        );
        assert_eq!(state(&Feature::Dlp, None, false, 10), "off: no feature key");
    }

    #[test]
    fn the_table_lines_up() {
        let r = FeatureKeysReply {
            recorded: true,
            features: vec![FeatureRow {
                feature: FeatureName::Antivirus,
                title: "Anti-Virus".into(),
                keyed: true,
                key: Some("pvo-antivirus-0123456789abcdef".into()),
                expires: Some(1_830_297_600),
                valid_until: Some("2027-12-31 23:59:59".into()),
                active: true,
                configured: true,
                state: "on".into(),
            }],
        };
        assert_eq!(
            table(&r).lines().nth(1).unwrap(),
            "    Anti-Virus              pvo-antivirus-0123456789abcdef      2027-12-31 23:59:59 GMT   on"
        );
    }
}
