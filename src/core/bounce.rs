//! Delivery status notifications (RFC 3464) for permanently failed recipients.
//!
//! A DSN is an ordinary message from the null sender, spooled and queued like
//! any other, so it survives a crash and is retried like any other. It is
//! never sent for a message whose sender is null or that is itself a DSN (no
//! bounce loops). It carries the headers of the original, not its body, so a
//! bounce never forwards content a filter may have wanted to stop.

use std::sync::Arc;

use crate::core::envelope::Envelope;
use crate::core::ids::Kind;
use crate::core::state::{ConfigHandle, MailHandle};

/// Builds and queues a DSN for one recipient of `orig` in the background. Without its
/// `body` (not in memory), the task reads it from the spool and then tells the queue
/// ([`Event::DsnRead`](crate::core::queue::handle::Event::DsnRead)), which keeps the message's
/// spool records until then.
pub fn spawn_dsn(
    config: Arc<ConfigHandle>,
    mail: Arc<MailHandle>,
    orig: Arc<Envelope>,
    rcpt: String,
    reason: String,
    body: Option<Arc<Vec<u8>>>,
) {
    tokio::spawn(async move {
        let body = match body {
            Some(b) => b,
            None => {
                let read = mail.read_body(orig.mid).await.unwrap_or_default();
                mail.queue
                    .send(crate::core::queue::handle::Event::DsnRead { mid: orig.mid });
                Arc::new(read)
            }
        };
        let mid = mail.ids.next(Kind::Mid);
        let cfg = config.current();
        let text = build_dsn(&cfg.hostname, &orig, &rcpt, &reason, &body, mid);
        let env = Envelope {
            mid,
            size: text.len() as u64,
            ..Envelope::from_mailer_daemon(vec![orig.sender.clone()])
        };
        match mail.spool_message(&env, text).await {
            Ok(body) => {
                mail.log
                    .emit(crate::core::events::Event::BounceGenerated { mid, of: orig.mid });
                mail.log.emit(crate::core::events::Event::Ready {
                    mid,
                    bytes: body.len(),
                    sender: "",
                });
                mail.log.emit(crate::core::events::Event::Queued { mid });
                mail.queue.enqueue(Arc::new(env), Some(body));
            }
            Err(e) => mail.log.emit(crate::core::events::Event::BounceNotSpooled {
                of: orig.mid,
                error: &e,
            }),
        }
    });
}

/// The text of a DSN: multipart/report with a human part, the machine
/// readable delivery-status, and the original headers.
pub fn build_dsn(
    hostname: &str,
    orig: &Envelope,
    rcpt: &str,
    reason: &str,
    orig_body: &[u8],
    mid: u64,
) -> Vec<u8> {
    let boundary = format!("pvo-dsn-{mid}-{}", orig.mid);
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let status = reason
        .split_whitespace()
        .find(|w| w.len() >= 5 && w.as_bytes()[1] == b'.' && w.starts_with(['4', '5']))
        .map(|s| s.replace('4', "5").chars().take(9).collect::<String>())
        .filter(|s| s.starts_with("5."))
        .unwrap_or_else(|| "5.0.0".to_string());
    // Addresses in the report are RFC 5321 text (a quoted local part stays
    // quoted), the same mailbox the message was for; none that cannot be.
    let sender = wire(&orig.sender);
    let rcpt = &wire(rcpt);
    let headers_end = find_header_end(orig_body);
    let orig_headers = String::from_utf8_lossy(&orig_body[..headers_end]);
    let reason_line = reason.replace(['\r', '\n'], " ");
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    m.push_str(&format!("To: <{sender}>\r\n"));
    m.push_str("Subject: Delivery Status Notification (Failure)\r\n");
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <dsn-{mid}@{hostname}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n"));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is the mail system at host {hostname}.\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\r\n<{rcpt}>: {reason_line}\r\n\r\n"
    ));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!(
        "Reporting-MTA: dns; {hostname}\r\nX-PVO-MID: {}\r\n\r\n",
        orig.mid
    ));
    m.push_str(&format!("Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {reason_line}\r\n\r\n"));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    m.push_str(&orig_headers);
    if !orig_headers.ends_with("\r\n") {
        m.push_str("\r\n");
    }
    m.push_str(&format!("\r\n--{boundary}--\r\n"));
    m.into_bytes()
}

/// The RFC 5321 form of a stored address, or `<unknown>`'s inside for one
/// that has none (spooled non-ASCII): never a different mailbox.
fn wire(stored: &str) -> String {
    pvo_proto::address::wire_address(stored).unwrap_or_else(|_| "unknown".to_string())
}

/// Offset of the end of the header block (excluding the blank line).
fn find_header_end(body: &[u8]) -> usize {
    body.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |p| p + 2)
}

/// A notification (a filter's `notify` action) about `orig` to `to`: a short message
/// from MAILER-DAEMON naming the message and why, as an envelope template and its text.
/// The pipeline injects it (`pipeline::spawn_notification`).
pub fn notification(
    cfg: &crate::core::config::Config,
    orig: &Envelope,
    to: String,
    why: &str,
) -> (Envelope, Vec<u8>) {
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let rcpts = orig
        .recipients
        .iter()
        .map(|r| format!("<{}>", wire(r)))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "From: PVO <MAILER-DAEMON@{host}>\r\nTo: <{to}>\r\nSubject: PVO notification: MID {mid} matched {why}\r\nDate: {date}\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMessage MID {mid} from <{sender}> to {rcpts} matched {why} on {host}.\r\n",
        host = cfg.hostname,
        mid = orig.mid,
        to = wire(&to),
        sender = wire(&orig.sender),
        why = why.replace(['\r', '\n'], " "),
    );
    (Envelope::from_mailer_daemon(vec![to]), text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_names_the_recipient_and_status() {
        let env = Envelope {
            mid: 5,
            icid: 1,
            sender: "alice@example.org".into(),
            recipients: vec!["bob@example.com".into()],
            received_at: 0,
            source_ip: "127.0.0.1".into(),
            listener: "IncomingMail".into(),
            dsn: false,
            size: 0,
            outgoing: false,
            scanned: false,
            cpq: None,
        };
        let d = build_dsn(
            "gw.example.com",
            &env,
            "bob@example.com",
            "550 5.1.1 user unknown",
            b"Subject: hi\r\n\r\nsecret body\r\n",
            9,
        );
        let t = String::from_utf8(d).unwrap();
        assert!(t.contains("Final-Recipient: rfc822; bob@example.com\r\n"));
        assert!(t.contains("Status: 5.1.1\r\n"));
        assert!(t.contains("Subject: hi\r\n"));
        assert!(!t.contains("secret body"));
        assert!(!t.replace("\r\n", "").contains('\n'));
    }

    /// A quoted local part stays quoted in the report, so the DSN names the
    /// mailbox the message was for (not `root` with parameters behind it).
    #[test]
    fn dsn_writes_addresses_in_their_rfc5321_form() {
        let env = Envelope {
            mid: 5,
            icid: 1,
            sender: "john doe@example.org".into(),
            recipients: vec!["root> NOTIFY=NEVER@example.com".into()],
            received_at: 0,
            source_ip: "127.0.0.1".into(),
            listener: "IncomingMail".into(),
            dsn: false,
            size: 0,
            outgoing: false,
            scanned: false,
            cpq: None,
        };
        let d = build_dsn(
            "gw.example.com",
            &env,
            "root> NOTIFY=NEVER@example.com",
            "550 5.1.1 user unknown",
            b"Subject: hi\r\n\r\n",
            9,
        );
        let t = String::from_utf8(d).unwrap();
        assert!(t.contains("To: <\"john doe\"@example.org>\r\n"), "{t}");
        assert!(
            t.contains("Final-Recipient: rfc822; \"root> NOTIFY=NEVER\"@example.com\r\n"),
            "{t}"
        );
        assert!(
            t.contains("<\"root> NOTIFY=NEVER\"@example.com>: 550"),
            "{t}"
        );
    }
}
