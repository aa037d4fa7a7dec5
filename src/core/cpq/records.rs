//! Between the spool's CPQ tags (`envelope::CpqTag`, JSON in the spool) and
//! the wire records of `pvo_proto::cpq`, and between those and the quarantine
//! model of `pvo-quarantine`.
//!
//! Each hold's `details` (content-filter evidence, DLP result with masked
//! samples, virus name, outbreak rules) travels with it as bounded JSON text
//! ([`wire_details`]): at most `MAX_DETAILS_JSON_LEN` bytes, shortened
//! (strings and lists cut, `"truncated": true`) so that it stays valid JSON.
//!
//! # Security
//!
//! The details a manager receives come from a gateway that passed mutual TLS
//! but are still untrusted text: [`holds_of`] keeps only a JSON object (anything
//! else is replaced by a note) and the threat level of the record wins over
//! one inside the details. They are shown through the UI's escaping like any
//! other stored value.

use pvo_proto::cpq::{
    CpqCommand, MetaRecord, QuarantineEntry, ReasonKind as Wire, ReleaseAction, ReleaseRecord,
    TransferRecord, MAX_DETAILS_JSON_LEN,
};
use pvo_quarantine::{
    EarlyReleaseActions, Hold, MembershipState, MessageInfo, Reason, ReasonKind, XHeader,
};

use crate::core::envelope::{CpqTag, Envelope, HoldTag, ReleaseTag, TransferTag};

pub fn wire_reason(k: ReasonKind) -> Wire {
    match k {
        ReasonKind::ContentFilter => Wire::ContentFilter,
        ReasonKind::Dlp => Wire::DlpPolicy,
        ReasonKind::Virus => Wire::Virus,
        ReasonKind::Outbreak => Wire::OutbreakRule,
        ReasonKind::Other => Wire::Other,
    }
}

pub fn model_reason(k: Wire) -> ReasonKind {
    match k {
        Wire::ContentFilter => ReasonKind::ContentFilter,
        Wire::DlpPolicy => ReasonKind::Dlp,
        Wire::Virus => ReasonKind::Virus,
        Wire::OutbreakRule => ReasonKind::Outbreak,
        Wire::Other => ReasonKind::Other,
    }
}

/// The transfer tag of a message a scan put in `holds`.
pub fn transfer_tag(node_id: &str, env: &Envelope, holds: &[Hold]) -> TransferTag {
    TransferTag {
        // Stable for this message: a rescan after a crash produces the same id,
        // so the manager stores it once.
        transfer_id: format!("{node_id}-{}-{}", env.mid, env.received_at),
        quarantines: holds
            .iter()
            .map(|h| HoldTag {
                quarantine: h.quarantine.clone(),
                reason: wire_reason(h.reason.kind).as_str().to_string(),
                reason_name: if h.reason.name.is_empty() {
                    "unnamed".to_string()
                } else {
                    h.reason.name.clone()
                },
                threat: h
                    .details
                    .get("threat_level")
                    .and_then(|v| v.as_u64())
                    .map_or(0, |t| t.min(5) as u8),
                exit: h.exit_at,
                details: wire_details(&h.details),
            })
            .collect(),
        gateway_mid: None,
        received: None,
    }
}

/// The transfer id of a message migrated from the local store (`info.msg_id`): stable,
/// so a retry or a resume after a crash is stored once by the manager.
pub fn migration_transfer_id(node_id: &str, msg_id: u64) -> String {
    format!("{node_id}-migrate-{msg_id}")
}

/// The transfer tag of a message migrated from the gateway's local quarantines: every
/// quarantine it is held in, with its reason, threat level and the same scheduled exit;
/// the record names the message's original MID and reception time.
pub fn migration_tag(node_id: &str, info: &MessageInfo) -> TransferTag {
    TransferTag {
        transfer_id: migration_transfer_id(node_id, info.msg_id),
        quarantines: info
            .memberships
            .iter()
            .filter(|m| m.state == MembershipState::Held)
            .map(|m| HoldTag {
                quarantine: m.quarantine.clone(),
                reason: wire_reason(m.reason.kind).as_str().to_string(),
                reason_name: if m.reason.name.is_empty() {
                    "unnamed".to_string()
                } else {
                    m.reason.name.clone()
                },
                threat: m
                    .details
                    .get("threat_level")
                    .and_then(|v| v.as_u64())
                    .map_or(0, |t| t.min(5) as u8),
                exit: Some(m.exit_at),
                details: wire_details(&m.details),
            })
            .collect(),
        gateway_mid: Some(info.gateway_mid),
        received: Some(info.received),
    }
}

/// A hold's details as the JSON text a transfer record carries: `None` when
/// there is nothing to say; otherwise compact JSON of at most
/// [`MAX_DETAILS_JSON_LEN`] bytes. Larger details are shortened so that they
/// stay valid JSON — long strings cut, long lists cut, from generous limits
/// down to tight ones until the text fits — and marked `"truncated": true`.
pub fn wire_details(details: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let empty = match details {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if empty {
        return None;
    }
    let text = details.to_string();
    if text.len() <= MAX_DETAILS_JSON_LEN {
        return Some(text);
    }
    let mark = |v: Value| -> Value {
        let mut obj = match v {
            Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        obj.insert("truncated".into(), Value::Bool(true));
        Value::Object(obj)
    };
    for (chars, items) in [
        (1024, 64),
        (512, 32),
        (256, 16),
        (128, 8),
        (64, 4),
        (32, 2),
        (16, 1),
    ] {
        let t = mark(shorten(details, chars, items, 0)).to_string();
        if t.len() <= MAX_DETAILS_JSON_LEN {
            return Some(t);
        }
    }
    // Even the shortest form is too large (a huge number of keys): keep the
    // scalars of the top level that fit, and say so.
    let mut out = serde_json::Map::new();
    out.insert("truncated".into(), Value::Bool(true));
    if let Value::Object(m) = details {
        for (k, v) in m {
            if v.is_object() || v.is_array() || k.chars().count() > 64 {
                continue;
            }
            let mut next = out.clone();
            next.insert(k.clone(), shorten(v, 64, 1, 0));
            if Value::Object(next.clone()).to_string().len() > MAX_DETAILS_JSON_LEN {
                break;
            }
            out = next;
        }
    }
    Some(Value::Object(out).to_string())
}

/// `v` with every string cut to `chars` characters (marked with `…`), every list
/// to `items` entries, every object to `items * 4` keys, and nothing deeper than
/// 8 levels.
fn shorten(v: &serde_json::Value, chars: usize, items: usize, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.chars().count() > chars => {
            let mut t: String = s.chars().take(chars).collect();
            t.push('…');
            Value::String(t)
        }
        Value::Array(_) if depth >= 8 => Value::Array(Vec::new()),
        Value::Object(_) if depth >= 8 => Value::Object(Default::default()),
        Value::Array(a) => Value::Array(
            a.iter()
                .take(items)
                .map(|x| shorten(x, chars, items, depth + 1))
                .collect(),
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .take(items * 4)
                .map(|(k, x)| {
                    let k: String = k.chars().take(chars.max(16)).collect();
                    (k, shorten(x, chars, items, depth + 1))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The `XPVO-META` line for a queued CPQ message.
pub fn meta_line(node_id: &str, env: &Envelope) -> Result<String, String> {
    match meta_line_with(node_id, env, true) {
        // Details of many holds together may exceed the record's limit: the
        // message still goes, with each hold's details reduced to the mark.
        Err(pvo_proto::cpq::CpqError::RecordTooLarge) => meta_line_with(node_id, env, false),
        r => r,
    }
    .map_err(|e| format!("cannot encode the CPQ record: {e}"))
}

fn meta_line_with(
    node_id: &str,
    env: &Envelope,
    details: bool,
) -> Result<String, pvo_proto::cpq::CpqError> {
    let rec = match &env.cpq {
        Some(CpqTag::Transfer(t)) => MetaRecord::Transfer(TransferRecord {
            gateway_id: node_id.to_string(),
            gateway_mid: t.gateway_mid.unwrap_or(env.mid),
            transfer_id: t.transfer_id.clone(),
            sender: env.sender.clone(),
            recipients: env.recipients.clone(),
            received: t.received.unwrap_or(env.received_at),
            quarantines: t
                .quarantines
                .iter()
                .map(|q| QuarantineEntry {
                    name: q.quarantine.clone(),
                    reason: Wire::from_token(&q.reason).unwrap_or(Wire::Other),
                    reason_name: q.reason_name.clone(),
                    threat_level: q.threat,
                    scheduled_exit: q.exit,
                    details: match &q.details {
                        Some(d) if details => Some(d.clone()),
                        Some(_) => Some(r#"{"truncated":true}"#.to_string()),
                        None => None,
                    },
                })
                .collect(),
        }),
        Some(CpqTag::Release(r)) => MetaRecord::Release(ReleaseRecord {
            release_id: r.release_id.clone(),
            gateway_id: r.gateway_id.clone(),
            gateway_mid: r.gateway_mid,
            released_by: r.released_by.clone(),
            actions: r
                .actions
                .iter()
                .filter_map(|(k, v)| match k.as_str() {
                    "subject-prepend" => Some(ReleaseAction::SubjectPrepend(v.clone())),
                    "subject-append" => Some(ReleaseAction::SubjectAppend(v.clone())),
                    "header" => v.split_once(':').map(|(n, val)| ReleaseAction::AddHeader {
                        name: n.to_string(),
                        value: val.trim_start().to_string(),
                    }),
                    "strip-attachments" => Some(ReleaseAction::StripAttachments),
                    _ => None,
                })
                .collect(),
        }),
        None => return Err(pvo_proto::cpq::CpqError::UnknownKind),
    };
    CpqCommand::Meta(rec).encode()
}

/// The early-release actions of the releasing quarantines, as tag pairs.
pub fn action_pairs(actions: &[EarlyReleaseActions]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in actions {
        if let Some(p) = &a.subject_prepend {
            out.push(("subject-prepend".into(), p.clone()));
        }
        if let Some(p) = &a.subject_append {
            out.push(("subject-append".into(), p.clone()));
        }
        if let Some(h) = &a.x_header {
            out.push(("header".into(), format!("{}: {}", h.name, h.value)));
        }
        if a.strip_attachments {
            out.push(("strip-attachments".into(), String::new()));
        }
    }
    out
}

/// The wire release actions as the quarantine model applies them, in order.
pub fn early_release(actions: &[ReleaseAction]) -> Vec<EarlyReleaseActions> {
    actions
        .iter()
        .map(|a| {
            let mut e = EarlyReleaseActions::default();
            match a {
                ReleaseAction::SubjectPrepend(t) => e.subject_prepend = Some(t.clone()),
                ReleaseAction::SubjectAppend(t) => e.subject_append = Some(t.clone()),
                ReleaseAction::AddHeader { name, value } => {
                    e.x_header = Some(XHeader {
                        name: name.clone(),
                        value: value.clone(),
                    })
                }
                ReleaseAction::StripAttachments => e.strip_attachments = true,
            }
            e
        })
        .collect()
}

/// The holds a transfer record asks the manager to apply.
pub fn holds_of(t: &TransferRecord) -> Vec<Hold> {
    t.quarantines
        .iter()
        .map(|q| Hold {
            quarantine: q.name.clone(),
            reason: Reason::new(model_reason(q.reason), q.reason_name.clone()),
            details: received_details(q),
            exit_at: q.scheduled_exit,
        })
        .collect()
}

/// A received quarantine entry's details as the store keeps them: the
/// gateway's JSON object (anything else is replaced by a note), with the
/// record's threat level.
fn received_details(q: &QuarantineEntry) -> serde_json::Value {
    let mut obj = match q
        .details
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => serde_json::Map::new(),
        Some(Ok(serde_json::Value::Object(m))) => m,
        Some(Ok(other)) => {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), other);
            m
        }
        Some(Err(_)) => {
            let mut m = serde_json::Map::new();
            m.insert(
                "details_error".into(),
                "the gateway sent details that are not JSON".into(),
            );
            m
        }
    };
    obj.insert("threat_level".into(), q.threat_level.into());
    serde_json::Value::Object(obj)
}

/// A release tag for the manager's queue.
/// The manager MID of a stored message (kept in its metadata).
pub fn manager_mid(info: &MessageInfo) -> u64 {
    info.meta
        .get("mid")
        .and_then(|v| v.as_u64())
        .unwrap_or(info.msg_id)
}

pub fn release_tag(
    manager_id: &str,
    msg_id: u64,
    gateway_id: &str,
    gateway_mid: u64,
    released_by: Vec<String>,
    actions: &[EarlyReleaseActions],
) -> ReleaseTag {
    ReleaseTag {
        // One id per stored message: a second release attempt of the same
        // message (a retry, a restart) carries the same id and the gateway
        // delivers it once.
        release_id: format!("{manager_id}-release-{msg_id}"),
        gateway_id: gateway_id.to_string(),
        gateway_mid,
        released_by,
        actions: action_pairs(actions),
        msg_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_tag_round_trips_through_the_wire_record() {
        let env = Envelope {
            mid: 42,
            icid: 1,
            sender: "a@example.org".into(),
            recipients: vec!["b@example.com".into(), "c@example.com".into()],
            received_at: 1_700_000_000,
            source_ip: "127.0.0.1".into(),
            listener: "IncomingMail".into(),
            dsn: false,
            size: 10,
            outgoing: false,
            scanned: true,
            cpq: None,
        };
        let holds = vec![Hold {
            quarantine: "Outbreak".into(),
            reason: Reason::new(ReasonKind::Outbreak, "OUTB-1"),
            details: serde_json::json!({ "threat_level": 4 }),
            exit_at: Some(1_700_003_600),
        }];
        let mut e = env.clone();
        e.cpq = Some(CpqTag::Transfer(transfer_tag("gw1", &env, &holds)));
        let line = meta_line("gw1", &e).unwrap();
        let Some(CpqCommand::Meta(MetaRecord::Transfer(t))) =
            pvo_proto::cpq::parse_command(line.as_bytes()).unwrap()
        else {
            panic!("not a transfer record")
        };
        assert_eq!(t.gateway_id, "gw1");
        assert_eq!(t.gateway_mid, 42);
        assert_eq!(t.transfer_id, "gw1-42-1700000000");
        assert_eq!(t.recipients.len(), 2);
        let back = holds_of(&t);
        assert_eq!(back[0].quarantine, "Outbreak");
        assert_eq!(back[0].reason, holds[0].reason);
        assert_eq!(back[0].exit_at, Some(1_700_003_600));
        assert_eq!(back[0].details["threat_level"], 4);
    }

    #[test]
    fn a_migrated_message_names_its_original_mid_reception_and_exit() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = pvo_quarantine::Store::open_sqlite(&dir.path().join("q.db"), 1_000).unwrap();
        let held = |q: &str, kind, name: &str, threat: u64| Hold {
            quarantine: q.into(),
            reason: Reason::new(kind, name),
            details: serde_json::json!({ "threat_level": threat, "evidence": [{ "condition": "c", "matched": name }] }),
            exit_at: Some(1_700_003_600),
        };
        let ins = store
            .quarantine(
                &pvo_quarantine::NewMessage {
                    idempotency_key: "local-77".into(),
                    gateway: "gw1.example".into(),
                    gateway_mid: 77,
                    sender: "a@example.org".into(),
                    recipients: vec!["b@example.com".into()],
                    received: 1_699_999_000,
                    subject: "s".into(),
                    attachments: vec![],
                    meta: serde_json::json!({ "mid": 77 }),
                    raw: b"Subject: s\r\n\r\nx\r\n".to_vec(),
                    holds: vec![
                        held("Policy", ReasonKind::ContentFilter, "quarantine_test", 0),
                        held("Outbreak", ReasonKind::Outbreak, "OUTB-1", 4),
                    ],
                },
                1_000,
            )
            .unwrap();
        let info = store.message(ins.msg_id).unwrap();
        let tag = migration_tag("gw1", &info);
        assert_eq!(tag.transfer_id, format!("gw1-migrate-{}", ins.msg_id));
        // The copy travels under a new MID and a new reception time.
        let env = Envelope {
            mid: 90_001,
            icid: 0,
            sender: info.sender.clone(),
            recipients: info.recipients.clone(),
            received_at: 1_800_000_000,
            source_ip: String::new(),
            listener: String::new(),
            dsn: false,
            size: 0,
            outgoing: false,
            scanned: true,
            cpq: Some(CpqTag::Transfer(tag)),
        };
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(back, env, "the tag survives the spool");
        let line = meta_line("gw1", &back).unwrap();
        let Some(CpqCommand::Meta(MetaRecord::Transfer(t))) =
            pvo_proto::cpq::parse_command(line.as_bytes()).unwrap()
        else {
            panic!("not a transfer record")
        };
        assert_eq!(t.gateway_mid, 77);
        assert_eq!(t.received, 1_699_999_000);
        let holds = holds_of(&t);
        assert_eq!(holds.len(), 2);
        assert_eq!(holds[0].quarantine, "Policy");
        assert_eq!(holds[0].exit_at, Some(1_700_003_600));
        // What matched travels with the migrated copy too.
        assert_eq!(
            holds[0].details["evidence"][0]["matched"],
            "quarantine_test"
        );
        assert_eq!(holds[1].reason, Reason::new(ReasonKind::Outbreak, "OUTB-1"));
        assert_eq!(holds[1].details["threat_level"], 4);
        assert_eq!(holds[1].exit_at, Some(1_700_003_600));
        // An older spool record without the new fields still reads.
        let old = br#"{"transfer_id":"x","quarantines":[]}"#;
        let tag: TransferTag = serde_json::from_slice(old).unwrap();
        assert_eq!((tag.gateway_mid, tag.received), (None, None));
    }

    fn wire(details: serde_json::Value) -> TransferRecord {
        let env = Envelope::decode(
            br#"{"mid":9,"icid":0,"sender":"a@example.org","recipients":["b@example.com"],"received_at":1,"source_ip":"","listener":""}"#,
        )
        .unwrap();
        let holds = vec![Hold {
            quarantine: "Policy".into(),
            reason: Reason::new(ReasonKind::ContentFilter, "f"),
            details,
            exit_at: None,
        }];
        let mut e = env.clone();
        e.cpq = Some(CpqTag::Transfer(transfer_tag("gw1", &env, &holds)));
        let e = Envelope::decode(&e.encode()).unwrap();
        let line = meta_line("gw1", &e).unwrap();
        let Some(CpqCommand::Meta(MetaRecord::Transfer(t))) =
            pvo_proto::cpq::parse_command(line.as_bytes()).unwrap()
        else {
            panic!("not a transfer record")
        };
        t
    }

    #[test]
    fn evidence_reaches_the_manager_as_it_was_found() {
        let d = serde_json::json!({ "evidence": [{ "condition": "subject_contains \"x\"", "matched": "a\r\n\"x\"\u{0}" }] });
        let held = holds_of(&wire(d.clone()));
        assert_eq!(held[0].details["evidence"], d["evidence"]);
        assert_eq!(held[0].details["threat_level"], 0);
        assert!(held[0].details.get("truncated").is_none());
        // Nothing to say: no details line at all.
        assert_eq!(wire(serde_json::json!({})).quarantines[0].details, None);
    }

    #[test]
    fn large_details_are_cut_to_valid_json_and_marked() {
        let huge = serde_json::json!({
            "policy": "PCI",
            "samples": (0..500).map(|i| format!("4111-XXXX-XXXX-{i:04} {}", "z".repeat(200))).collect::<Vec<_>>(),
            "matched": "m".repeat(100_000),
        });
        let text = wire_details(&huge).unwrap();
        assert!(text.len() <= MAX_DETAILS_JSON_LEN, "{}", text.len());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["policy"], "PCI");
        assert!(v["samples"][0]
            .as_str()
            .unwrap()
            .starts_with("4111-XXXX-XXXX-0000"));
        // Through the wire to the manager.
        let held = holds_of(&wire(huge));
        assert_eq!(held[0].details["truncated"], true);
        assert_eq!(held[0].details["policy"], "PCI");
        // Thousands of keys: still valid, bounded, marked.
        let mut many = serde_json::Map::new();
        for i in 0..5000 {
            many.insert(format!("key{i}"), serde_json::json!([i, "v"]));
        }
        many.insert("virus".into(), "EICAR".into());
        let text = wire_details(&serde_json::Value::Object(many)).unwrap();
        assert!(text.len() <= MAX_DETAILS_JSON_LEN);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["truncated"], true);
        // Multi-byte text is cut at a character boundary.
        let text = wire_details(&serde_json::json!({ "m": "é😀".repeat(5000) })).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    }

    #[test]
    fn details_that_are_not_an_object_or_not_json_are_kept_safe() {
        let q = |d: &str| QuarantineEntry {
            name: "Policy".into(),
            reason: Wire::Virus,
            reason_name: "v".into(),
            threat_level: 3,
            scheduled_exit: None,
            details: Some(d.into()),
        };
        let v = received_details(&q(r#"{"virus":"EICAR","threat_level":0}"#));
        assert_eq!(
            (v["virus"].as_str(), v["threat_level"].as_u64()),
            (Some("EICAR"), Some(3))
        );
        assert_eq!(
            received_details(&q("[1,2]"))["value"],
            serde_json::json!([1, 2])
        );
        assert!(received_details(&q("{not json"))
            .get("details_error")
            .is_some());
    }

    #[test]
    fn release_actions_survive_the_trip() {
        let acts = vec![EarlyReleaseActions {
            subject_prepend: Some("[released]".into()),
            x_header: Some(XHeader {
                name: "X-Released".into(),
                value: "yes".into(),
            }),
            strip_attachments: true,
            ..Default::default()
        }];
        let tag = release_tag("mgr", 7, "gw1", 42, vec!["Policy".into()], &acts);
        let mut env = Envelope::decode(
            br#"{"mid":9,"icid":0,"sender":"","recipients":["b@example.com"],"received_at":1,"source_ip":"","listener":""}"#,
        )
        .unwrap();
        env.cpq = Some(CpqTag::Release(tag));
        let line = meta_line("mgr", &env).unwrap();
        let Some(CpqCommand::Meta(MetaRecord::Release(r))) =
            pvo_proto::cpq::parse_command(line.as_bytes()).unwrap()
        else {
            panic!("not a release record")
        };
        assert_eq!(r.release_id, "mgr-release-7");
        let e = early_release(&r.actions);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].subject_prepend.as_deref(), Some("[released]"));
        assert_eq!(e[1].x_header.as_ref().unwrap().name, "X-Released");
        assert!(e[2].strip_attachments);
    }
}
