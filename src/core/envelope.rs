//! The envelope of a spooled message and the progress records kept with it.
//!
//! Both are stored in the spool as small JSON documents (the spool itself
//! treats them as opaque bytes). JSON keeps a spool file readable with `less`
//! when an administrator inspects a file that was moved aside.

use serde::{Deserialize, Serialize};

/// The destination of messages waiting for the manager (gateway): the queue's name for
/// the CPQ link, which a tagged envelope is routed to.
pub const CPQ_HOST: &str = "the.cpq.host";
/// The destination of released messages waiting for their gateway (manager).
pub const CPQ_RELEASE_HOST: &str = "the.cpq.release.host";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub mid: u64,
    pub icid: u64,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// Recipients; the index is the RID.
    pub recipients: Vec<String>,
    /// Unix time of reception (the queue lifetime counts from here).
    pub received_at: u64,
    pub source_ip: String,
    pub listener: String,
    /// This message is a delivery status notification generated here; it is
    /// never bounced itself.
    #[serde(default)]
    pub dsn: bool,
    /// Size of the stored message in bytes (with our Received header).
    #[serde(default)]
    pub size: u64,
    /// Received from a host whose policy is RELAY: outgoing mail policies apply.
    #[serde(default)]
    pub outgoing: bool,
    /// Already scanned (a released or rewritten message continues after the
    /// stage that produced it): goes straight to delivery.
    #[serde(default)]
    pub scanned: bool,
    /// A CPQ message: all recipients go to `the.cpq.host` (gateway -> manager)
    /// or `the.cpq.release.host` (manager -> gateway) with this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpq: Option<CpqTag>,
}

impl Envelope {
    /// A message this node writes itself from MAILER-DAEMON (a DSN, a notification):
    /// the null sender, so it never bounces; outgoing and already scanned; received now.
    /// `mid` and `size` are the caller's (0 when `pipeline::inject` assigns them).
    pub fn from_mailer_daemon(recipients: Vec<String>) -> Envelope {
        Envelope {
            mid: 0,
            icid: 0,
            sender: String::new(),
            recipients,
            received_at: crate::core::clock::unix_now(),
            source_ip: String::new(),
            listener: String::new(),
            dsn: true,
            size: 0,
            outgoing: true,
            scanned: true,
            cpq: None,
        }
    }
}

/// What a CPQ message carries besides its envelope (see `docs/cpq.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CpqTag {
    /// Gateway: a quarantined message on its way to the manager.
    Transfer(TransferTag),
    /// Manager: a released message on its way back to its gateway.
    Release(ReleaseTag),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransferTag {
    pub transfer_id: String,
    pub quarantines: Vec<HoldTag>,
    /// The MID the record names when it is not this spooled message's: a message
    /// migrated from the local quarantines travels under a new MID but is the manager's
    /// copy of the one the gateway received (`cpq::migrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_mid: Option<u64>,
    /// When the gateway received the message, when that is not the envelope's
    /// `received_at` (a migrated message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HoldTag {
    pub quarantine: String,
    /// `content-filter`, `dlp-policy`, `virus`, `outbreak-rule` or `other`.
    pub reason: String,
    pub reason_name: String,
    pub threat: u8,
    pub exit: Option<u64>,
    /// The hold's details as bounded JSON text (`cpq::records::wire_details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseTag {
    pub release_id: String,
    pub gateway_id: String,
    pub gateway_mid: u64,
    pub released_by: Vec<String>,
    /// (kind, value) pairs: `subject-prepend`, `subject-append`, `header` (value
    /// `Name: value`), `strip-attachments`.
    pub actions: Vec<(String, String)>,
    /// The message's id in the manager's store.
    pub msg_id: u64,
}

impl Envelope {
    /// The queue destination of every recipient, when it is not the
    /// recipient's domain.
    pub fn fixed_destination(&self) -> Option<&'static str> {
        match &self.cpq {
            Some(CpqTag::Transfer(_)) => Some(CPQ_HOST),
            Some(CpqTag::Release(_)) => Some(CPQ_RELEASE_HOST),
            None => None,
        }
    }
}

impl Envelope {
    pub fn sender_display(&self) -> &str {
        &self.sender
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelope serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The final state of one recipient.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RcptFinal {
    Delivered,
    Bounced,
    Deleted,
}

/// A progress record appended to the spool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Update {
    Rcpt {
        rid: u32,
        state: RcptFinal,
    },
    /// `redirectrecipients`: every pending recipient goes to this next hop,
    /// also after a restart.
    Redirect {
        host: String,
        port: u16,
    },
    /// The message passed the scanning pipeline: after a restart it goes to
    /// delivery without being scanned again.
    Scanned,
    /// The message was quarantined in central mode: it goes to the manager
    /// (also after a restart) instead of its recipients.
    Cpq(CpqTag),
}

impl Update {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("update serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Update, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The domain of a recipient address (after the last '@'), lowercased.
pub fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = Envelope {
            mid: 7,
            icid: 3,
            sender: String::new(),
            recipients: vec!["a@b.example".into()],
            received_at: 1,
            source_ip: "127.0.0.1".into(),
            listener: "IncomingMail".into(),
            dsn: true,
            size: 10,
            outgoing: false,
            scanned: false,
            cpq: None,
        };
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let u = Update::Rcpt {
            rid: 2,
            state: RcptFinal::Bounced,
        };
        assert_eq!(Update::decode(&u.encode()).unwrap(), u);
        assert_eq!(domain_of("x@Example.COM"), "example.com");
    }
}
