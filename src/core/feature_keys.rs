//! Feature keys of this machine (`featurekey`): which licensable engines — anti-virus,
//! outbreak filters, DLP, and any engine that comes later (`pvo_cluster::features`) —
//! run here. A feature without an active key is off on the machine: the pipeline skips
//! its engine for every message, and `status`/`showconfig` say so.
//!
//! Keys are machine-only (`docs/appliance.md`, Clusters) and live in
//! `DATA_DIR/featurekeys.json` (written whole with `atomic_file::write_private`, 0600),
//! not in the configuration: adding or removing one takes effect at once, without a
//! commit. A data directory without the file behaves as if every feature had a key that
//! never expires (existing installs and quickstart keep working); the first change
//! writes the full set. A key is a text the administrator records (a licence
//! reference); `add` without one makes `pvo-FEATURE-<16 hex>`.
//!
//! The engines ask [`FeatureKeys::is_active`] for every message: one atomic load. Expiry
//! is [`watch`]'s: it wakes at the next expiry (or once a minute), recomputes what is on
//! and logs one warning per key that expired.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use pvo_cluster::features::{Feature, FeatureKey, UnknownFeature};

use crate::core::config::ScanConfig;

/// The file's name in the data directory.
pub const FILE: &str = "featurekeys.json";

/// The longest validity `--days` takes (100 years).
pub const MAX_DAYS: u64 = 36_500;

/// The latest expiry the REST API takes, Unix seconds: 9999-12-31T23:59:59Z.
pub const MAX_EXPIRES: u64 = 253_402_300_799;

/// The longest key text.
pub const MAX_KEY: usize = 128;

/// The key text of a feature that has no recorded key because the data directory has
/// no `featurekeys.json` yet.
pub const DEFAULT_KEY: &str = "default";

/// The features' names, for the messages that list them.
pub fn allowed() -> String {
    Feature::ALL
        .iter()
        .map(Feature::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A feature by name, or the error naming the allowed ones.
pub fn parse_feature(name: &str) -> Result<Feature, String> {
    name.trim()
        .to_ascii_lowercase()
        .parse::<Feature>()
        .map_err(|_| format!("Unknown feature {name:?}; allowed: {}.", allowed()))
}

/// A key text: 1 to 128 printable ASCII characters without spaces.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "The key must be 1 to {MAX_KEY} printable characters without spaces (a licence reference); leave it out and one is made."
        ));
    }
    Ok(())
}

/// The key `add` makes when none is given: `pvo-FEATURE-<16 hex>`.
pub fn new_key(feature: &Feature, random: [u8; 8]) -> String {
    format!("pvo-{}-{}", feature.name(), hex::encode(random))
}

/// When a key given `--expires` or `--days` stops working (Unix seconds: the first
/// second it is off), `None` for a key that does not expire. `--expires` takes a date
/// (`2027-12-31`: the key works to the end of that day, UTC) or an RFC 3339 time
/// (`2027-12-31T12:00:00Z`); either must be in the future.
pub fn expiry(expires: Option<&str>, days: Option<u64>, now: u64) -> Result<Option<u64>, String> {
    let expires = expires.map(str::trim).filter(|s| !s.is_empty());
    match (expires, days) {
        (Some(_), Some(_)) => Err("Give --expires or --days, not both.".into()),
        (None, None) => Ok(None),
        (None, Some(d)) if d == 0 || d > MAX_DAYS => {
            Err(format!("--days must be 1 to {MAX_DAYS} (got {d})."))
        }
        (None, Some(d)) => Ok(Some(now + d * 86_400)),
        (Some(s), None) => {
            let at = parse_time(s).ok_or_else(|| {
                format!("--expires {s:?} is not a date: give YYYY-MM-DD (the key works to the end of that day, UTC) or an RFC 3339 time such as 2027-12-31T23:59:59Z.")
            })?;
            if at <= now as i64 {
                return Err(format!(
                    "--expires {s} is in the past (it is {} UTC now); give a later date or time.",
                    crate::core::clock::gmt(now)
                ));
            }
            Ok(Some(at as u64))
        }
    }
}

/// A date (the end of that day, UTC: the next midnight) or an RFC 3339 time, as Unix
/// seconds.
fn parse_time(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).ok()?;
    let next = d.next_day()?;
    Some(next.midnight().assume_utc().unix_timestamp())
}

/// The last second a key works, as tables show it (`2027-12-31 23:59:59`, GMT).
pub fn valid_until(expires: u64) -> String {
    crate::core::clock::gmt(expires.saturating_sub(1))
}

/// The features the configuration's mail policies use: anti-virus (a policy with
/// `antivirus = true` and an `[antivirus]` engine), DLP (a policy naming DLP policies),
/// outbreak filters (a policy with `outbreak`).
pub fn used_by(scan: &ScanConfig) -> BTreeSet<Feature> {
    let mut out = BTreeSet::new();
    for p in &scan.policies {
        if p.antivirus && scan.antivirus.is_some() {
            out.insert(Feature::Antivirus);
        }
        if !p.dlp_policies.is_empty() {
            out.insert(Feature::Dlp);
        }
        if p.outbreak.is_some() {
            out.insert(Feature::Outbreak);
        }
    }
    out
}

/// The earliest expiry after `now` among `keys`.
pub fn next_expiry(keys: &[FeatureKey], now: u64) -> Option<u64> {
    keys.iter()
        .filter_map(|k| k.expires)
        .filter(|t| *t > now)
        .min()
}

fn bit(f: &Feature) -> u8 {
    1 << Feature::ALL.iter().position(|x| x == f).unwrap_or(7)
}

fn mask(set: &BTreeSet<Feature>) -> u8 {
    set.iter().fold(0, |m, f| m | bit(f))
}

/// The keys in force when there is no file: every feature, never expiring.
fn defaults() -> Vec<FeatureKey> {
    Feature::ALL
        .iter()
        .map(|f| FeatureKey {
            feature: f.clone(),
            key: DEFAULT_KEY.into(),
            expires: None,
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Stored {
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    feature: String,
    key: String,
    /// Unix seconds: the first second it no longer works; absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

fn decode(bytes: &[u8]) -> Result<Vec<FeatureKey>, String> {
    let s: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut out: Vec<FeatureKey> = Vec::new();
    for k in s.keys {
        let feature = k.feature.parse::<Feature>().map_err(|e| e.to_string())?;
        if out.iter().any(|o| o.feature == feature) {
            return Err(format!("feature {feature} has two keys"));
        }
        out.push(FeatureKey {
            feature,
            key: k.key,
            expires: k.expires,
        });
    }
    Ok(out)
}

fn encode(keys: &[FeatureKey]) -> Vec<u8> {
    let s = Stored {
        keys: keys
            .iter()
            .map(|k| StoredKey {
                feature: k.feature.name().into(),
                key: k.key.clone(),
                expires: k.expires,
            })
            .collect(),
    };
    let mut v = serde_json::to_vec_pretty(&s).unwrap_or_default();
    v.push(b'\n');
    v
}

/// What `add` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub key: FeatureKey,
    /// The recorded key it replaced (a renewal; not a default of a data directory
    /// without `featurekeys.json`).
    pub replaced: Option<FeatureKey>,
}

/// The feature keys of the machine: the handle the node keeps (`state::ScanHandle`).
pub struct FeatureKeys {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// The features on now, one bit each (the engines read it per message).
    active: AtomicU8,
    /// Wakes [`watch`] after a change (a new expiry to wait for).
    changed: tokio::sync::Notify,
}

struct Inner {
    keys: Vec<FeatureKey>,
    /// Whether `featurekeys.json` exists (else: the defaults).
    stored: bool,
}

impl FeatureKeys {
    /// Reads `DATA_DIR/featurekeys.json` (none: every feature keyed, never expiring).
    pub fn open(data_dir: &Path, now: u64) -> Result<FeatureKeys> {
        let path = data_dir.join(FILE);
        let (keys, stored) = match std::fs::read(&path) {
            Ok(b) => (
                decode(&b)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
                    .context(
                        "the feature keys cannot be read; fix or remove the file (without it every feature is on)",
                    )?,
                true,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (defaults(), false),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(FeatureKeys::with(path, keys, stored, now))
    }

    fn with(path: PathBuf, keys: Vec<FeatureKey>, stored: bool, now: u64) -> FeatureKeys {
        let active = AtomicU8::new(mask(&pvo_cluster::features::active(&keys, now)));
        FeatureKeys {
            path,
            inner: Mutex::new(Inner { keys, stored }),
            active,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The features on on this machine now (as last computed: at a change, at an
    /// expiry, at least once a minute). Cheap: one atomic load.
    pub fn active_features(&self) -> BTreeSet<Feature> {
        let m = self.active.load(Ordering::Relaxed);
        Feature::ALL
            .iter()
            .filter(|f| m & bit(f) != 0)
            .cloned()
            .collect()
    }

    /// Whether `feature` is on on this machine now: one atomic load.
    pub fn is_active(&self, feature: &Feature) -> bool {
        self.active.load(Ordering::Relaxed) & bit(feature) != 0
    }

    /// The installed keys (expired ones too), in `Feature::ALL` order, and whether they
    /// come from the file (else they are the defaults of a data directory without one).
    pub fn list(&self) -> (Vec<FeatureKey>, bool) {
        let i = self.inner.lock().unwrap();
        let mut keys = i.keys.clone();
        keys.sort_by(|a, b| a.feature.cmp(&b.feature));
        (keys, i.stored)
    }

    /// Installs `key` (replacing the feature's key: a renewal) and writes the file.
    pub fn add(&self, key: FeatureKey, now: u64) -> Result<Added> {
        let mut i = self.inner.lock().unwrap();
        let mut keys = i.keys.clone();
        // Replacing a default key (no file yet) installs the first one: no renewal.
        let replaced = keys
            .iter()
            .position(|k| k.feature == key.feature)
            .map(|at| keys.remove(at))
            .filter(|_| i.stored);
        keys.push(key.clone());
        keys.sort_by(|a, b| a.feature.cmp(&b.feature));
        self.store(&mut i, keys, now)?;
        Ok(Added { key, replaced })
    }

    /// Removes the key of `feature` and writes the file; `None`: it had none.
    pub fn remove(&self, feature: &Feature, now: u64) -> Result<Option<FeatureKey>> {
        let mut i = self.inner.lock().unwrap();
        let mut keys = i.keys.clone();
        let Some(at) = keys.iter().position(|k| &k.feature == feature) else {
            return Ok(None);
        };
        let gone = keys.remove(at);
        self.store(&mut i, keys, now)?;
        Ok(Some(gone))
    }

    fn store(&self, i: &mut Inner, keys: Vec<FeatureKey>, now: u64) -> Result<()> {
        crate::core::atomic_file::write_private(&self.path, &encode(&keys))
            .with_context(|| format!("writing {}", self.path.display()))?;
        i.keys = keys;
        i.stored = true;
        self.active.store(
            mask(&pvo_cluster::features::active(&i.keys, now)),
            Ordering::Relaxed,
        );
        self.changed.notify_one();
        Ok(())
    }

    /// Recomputes what is on at `now`; the features whose key expired since the last
    /// computation (each said once).
    pub fn refresh(&self, now: u64) -> Vec<Feature> {
        let i = self.inner.lock().unwrap();
        let now_on = mask(&pvo_cluster::features::active(&i.keys, now));
        let was = self.active.swap(now_on, Ordering::Relaxed);
        Feature::ALL
            .iter()
            .filter(|f| was & bit(f) != 0 && now_on & bit(f) == 0)
            .cloned()
            .collect()
    }

    /// The features whose installed key has expired at `now` (said once at start).
    pub fn expired(&self, now: u64) -> Vec<Feature> {
        let i = self.inner.lock().unwrap();
        i.keys
            .iter()
            .filter(|k| !k.active(now))
            .map(|k| k.feature.clone())
            .collect()
    }

    /// The next expiry after `now`.
    pub fn next_expiry(&self, now: u64) -> Option<u64> {
        next_expiry(&self.inner.lock().unwrap().keys, now)
    }
}

/// Puts expiries in force without a restart: wakes at the next expiry (to the second),
/// after a change, or once a minute, and logs one warning per key that expired.
pub async fn watch(keys: Arc<FeatureKeys>, log: crate::core::mail_log::MailLog) {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    loop {
        let now = crate::core::clock::unix_now();
        for f in keys.refresh(now) {
            log.emit(crate::core::events::Event::FeatureKeyExpired {
                feature: f.title(),
                command: f.name(),
            });
        }
        let minute = Duration::from_secs(60);
        let wait = match keys.next_expiry(now) {
            Some(t) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                Duration::from_secs(t).saturating_sub(now).min(minute)
            }
            None => minute,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = keys.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_000_000; // 2026-11-30

    fn key(f: Feature, expires: Option<u64>) -> FeatureKey {
        FeatureKey {
            feature: f,
            key: "k".into(),
            expires,
        }
    }

    #[test]
    fn expiry_from_a_date_a_time_or_days() {
        // The end of that day, UTC: the key works through 23:59:59.
        let end = expiry(Some("2027-12-31"), None, NOW).unwrap().unwrap();
        assert_eq!(valid_until(end), "2027-12-31 23:59:59");
        assert_eq!(end, 1_830_297_600);
        let t = expiry(Some("2027-12-31T12:00:00Z"), None, NOW).unwrap();
        assert_eq!(t, Some(1_830_254_400));
        let t = expiry(Some("2027-12-31T12:00:00+02:00"), None, NOW).unwrap();
        assert_eq!(t, Some(1_830_254_400 - 7200));
        assert_eq!(expiry(None, Some(30), NOW), Ok(Some(NOW + 30 * 86_400)));
        assert_eq!(expiry(None, None, NOW), Ok(None));
        assert_eq!(expiry(Some(" "), None, NOW), Ok(None));
    }

    #[test]
    fn bad_expiries_are_refused_with_what_is_allowed() {
        let cases: &[(Option<&str>, Option<u64>, &str)] = &[
            (
                Some("2020-01-01"),
                None,
                "--expires 2020-01-01 is in the past (it is 2026-11-30",
            ),
            (Some("2027-02-30"), None, "is not a date: give YYYY-MM-DD"),
            (Some("tomorrow"), None, "is not a date: give YYYY-MM-DD"),
            (
                Some("2027-12-31"),
                Some(3),
                "Give --expires or --days, not both.",
            ),
            (None, Some(0), "--days must be 1 to 36500 (got 0)."),
            (None, Some(40_000), "--days must be 1 to 36500"),
        ];
        for (e, d, want) in cases {
            let got = expiry(*e, *d, NOW).unwrap_err();
            assert!(got.contains(want), "{e:?} {d:?}: {got}");
        }
        // Today still counts: its end is in the future.
        let today = crate::core::clock::gmt(NOW)[..10].to_string();
        assert!(expiry(Some(&today), None, NOW).unwrap().unwrap() > NOW);
    }

    #[test]
    fn features_and_keys_are_checked() {
        assert_eq!(parse_feature("DLP"), Ok(Feature::Dlp));
        assert_eq!(
            parse_feature("spam").unwrap_err(),
            "Unknown feature \"spam\"; allowed: antivirus, outbreak, dlp."
        );
        assert!(check_key("LIC-2027/abc=").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        let k = new_key(&Feature::Antivirus, [0xab; 8]);
        assert_eq!(k, "pvo-antivirus-abababababababab");
    }

    #[test]
    fn no_file_means_every_feature_forever_and_the_first_change_writes_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let keys = FeatureKeys::open(dir.path(), NOW).unwrap();
        assert_eq!(keys.active_features(), Feature::ALL.into_iter().collect());
        let (listed, stored) = keys.list();
        assert!(!stored);
        assert!(listed
            .iter()
            .all(|k| k.key == DEFAULT_KEY && k.expires.is_none()));
        assert!(!dir.path().join(FILE).exists());

        let gone = keys.remove(&Feature::Dlp, NOW).unwrap().unwrap();
        assert_eq!(gone.feature, Feature::Dlp);
        assert!(!keys.is_active(&Feature::Dlp));
        assert!(keys.is_active(&Feature::Antivirus));
        assert_eq!(keys.remove(&Feature::Dlp, NOW).unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join(FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        // The file holds the full set: a restart sees the same.
        let again = FeatureKeys::open(dir.path(), NOW).unwrap();
        let (listed, stored) = again.list();
        assert!(stored);
        assert_eq!(
            listed.iter().map(|k| k.feature.clone()).collect::<Vec<_>>(),
            [Feature::Antivirus, Feature::Outbreak]
        );
    }

    #[test]
    fn add_replaces_and_expiry_turns_a_feature_off_once() {
        let dir = tempfile::tempdir().unwrap();
        let keys = FeatureKeys::open(dir.path(), NOW).unwrap();
        let a = keys
            .add(key(Feature::Antivirus, Some(NOW + 100)), NOW)
            .unwrap();
        assert_eq!(a.replaced, None);
        assert_eq!(keys.next_expiry(NOW), Some(NOW + 100));
        assert!(keys.refresh(NOW + 99).is_empty());
        assert!(keys.is_active(&Feature::Antivirus));
        assert_eq!(keys.refresh(NOW + 100), [Feature::Antivirus]);
        assert!(!keys.is_active(&Feature::Antivirus));
        // Said once.
        assert!(keys.refresh(NOW + 160).is_empty());
        assert_eq!(keys.expired(NOW + 160), [Feature::Antivirus]);
        // A renewal puts it back.
        let r = keys.add(key(Feature::Antivirus, None), NOW + 200).unwrap();
        assert_eq!(r.replaced.unwrap().expires, Some(NOW + 100));
        assert!(keys.is_active(&Feature::Antivirus));
        assert_eq!(keys.next_expiry(NOW + 200), None);
        // An expired key read at start is off from the first message.
        keys.add(key(Feature::Dlp, Some(NOW + 300)), NOW + 200)
            .unwrap();
        let later = FeatureKeys::open(dir.path(), NOW + 400).unwrap();
        assert!(!later.is_active(&Feature::Dlp));
        assert_eq!(later.expired(NOW + 400), [Feature::Dlp]);
    }

    #[test]
    fn an_unreadable_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            r#"{"keys":[{"feature":"spam","key":"x"}]}"#,
        )
        .unwrap();
        let e = format!("{:#}", FeatureKeys::open(dir.path(), NOW).err().unwrap());
        assert!(e.contains("featurekeys.json"), "{e}");
        assert!(e.contains("use antivirus, outbreak or dlp"), "{e}");
    }

    #[test]
    fn what_the_configuration_uses() {
        use crate::core::config::tests::{parse, GOOD};
        assert!(used_by(&parse(GOOD).unwrap().scanning).is_empty());
        let c = parse(&format!(
            "{GOOD}[antivirus]\nclamd = \"127.0.0.1:3310\"\n[[mail_policy]]\nname = \"In\"\nantivirus = true\n"
        ))
        .unwrap();
        assert_eq!(used_by(&c.scanning), BTreeSet::from([Feature::Antivirus]));
    }
}
