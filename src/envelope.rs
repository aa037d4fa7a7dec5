//! The envelope of a spooled message and the progress records kept with it.
//!
//! Both are stored in the spool as small JSON documents (the spool itself
//! treats them as opaque bytes). JSON keeps a spool file readable with `less`
//! when an administrator inspects a file that was moved aside.

use serde::{Deserialize, Serialize};

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
