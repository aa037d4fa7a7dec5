//! Line framing across TCP reads: the tail of an over-long command
//! line that arrives in a later read is still part of the refused line, on the SMTP and the
//! CPQ listener; and the delivery client keeps a next hop's over-long reply line one line
//! when it comes in two writes, so its tail never answers the next command.
//!
//! The client writes with TCP_NODELAY and waits for the server's `500 Line too long`
//! before it writes the rest, so the server has certainly read the line in two pieces. The
//! next hop is a small SMTP server in this file (std::net, one thread) because it must
//! control exactly where its writes split.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{
    send_relayed, GatewayToml, Node, NodeDir, Sink, SmtpClient, MANAGER_IP, TRUSTED,
};

const DELIVERY: Duration = Duration::from_secs(60);

/// Sends `head` (no line end) and waits for its 500, then the rest of the same line, a
/// smuggled MAIL FROM, and QUIT: the next reply must be QUIT's 221, not an answer to the
/// smuggled command.
fn assert_tail_is_skipped(c: &mut SmtpClient, head: &[u8]) {
    c.write_raw(head).expect("write the start of the long line");
    let r = c.read_reply().expect("reply to the long line");
    assert_eq!(r.code, 500, "{}", r.raw());
    assert!(r.raw().contains("Line too long"), "{}", r.raw());
    c.write_raw(b"MAIL FROM:<smuggled@evil.test>\r\n")
        .expect("write the rest of the line");
    let r = c.command("QUIT");
    assert_eq!(
        r.code,
        221,
        "the tail of the long line ran as a command: {}",
        r.raw()
    );
}

fn long_line(len: usize) -> Vec<u8> {
    let mut head = b"NOOP ".to_vec();
    head.resize(len, b'a');
    head
}

#[test]
fn the_tail_of_an_overlong_line_in_a_later_read_never_runs_on_the_smtp_listener() {
    let sink = Sink::accepting();
    let node = Node::start(&GatewayToml::new(&sink).build());
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO framing.test", 250);
    assert_tail_is_skipped(&mut c, &long_line(3000));
    assert!(
        !node.mail_logs().contains("smuggled@evil.test"),
        "{}",
        node.mail_logs()
    );
}

#[test]
fn the_tail_of_an_overlong_line_in_a_later_read_never_runs_on_the_cpq_listener() {
    let sink = Sink::accepting();
    // A gateway's cpq_listener takes plain SMTP from its manager's address until STARTTLS;
    // local mode never connects to that manager.
    let node =
        NodeDir::new(&GatewayToml::new(&sink).cpq("gw1", 0, "local", 7025).build()).start_gateway();
    let mut c = SmtpClient::open(node.listener("cpq_listener"), Some(MANAGER_IP));
    c.expect("EHLO manager.framing.test", 250);
    // A CPQ record line may be far longer than an SMTP command: go past its limit.
    assert_tail_is_skipped(&mut c, &long_line(pvo_proto::cpq::MAX_LINE_LEN + 4096));
}

/// What the next hop received in one transaction.
#[derive(Debug)]
struct Received {
    commands: Vec<String>,
    body: String,
}

/// A next hop whose EHLO reply has a line of more than `pvo_proto::reply::MAX_LINE` bytes,
/// written in two pieces split exactly at that limit; the second piece starts with what
/// would be a final reply line (`250 SPLIT`) if the line were cut there, and the real last
/// line follows. A client that took the tail for a line of its own would take the real last
/// line for the answer to MAIL FROM and be one reply behind from then on.
fn long_reply_hop() -> (SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            if let Some(received) = serve(stream) {
                if tx.send(received).is_err() {
                    return;
                }
            }
        }
    });
    (addr, rx)
}

fn serve(stream: TcpStream) -> Option<Received> {
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(DELIVERY)).ok()?;
    let mut w = stream.try_clone().ok()?;
    let mut r = BufReader::new(stream);
    w.write_all(b"220 hop.framing.test ESMTP\r\n").ok()?;
    let mut commands = Vec::new();
    let mut body = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        commands.push(line);
        match verb.as_str() {
            "EHLO" => {
                let mut first = b"250-hop.framing.test ".to_vec();
                first.resize(pvo_proto::reply::MAX_LINE, b'x');
                w.write_all(&first).ok()?;
                w.flush().ok()?;
                // Let the client read the first piece on its own.
                std::thread::sleep(Duration::from_millis(300));
                w.write_all(b"250 SPLIT\r\n250 8BITMIME\r\n").ok()?;
            }
            "MAIL" | "RCPT" => w.write_all(b"250 2.1.0 Ok\r\n").ok()?,
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .ok()?;
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).ok()? == 0 {
                        return None;
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    body.push_str(&l);
                }
                w.write_all(b"250 2.0.0 Ok: queued\r\n").ok()?;
            }
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").ok()?;
                return Some(Received { commands, body });
            }
            _ => w.write_all(b"250 2.0.0 Ok\r\n").ok()?,
        }
    }
}

#[test]
fn a_next_hops_overlong_reply_line_in_two_writes_stays_one_line() {
    let sink = Sink::accepting();
    let (hop, received) = long_reply_hop();
    let node = Node::start(
        &GatewayToml::new(&sink)
            .route("long-reply.example", hop)
            .quiet_bounces()
            .build(),
    );
    let mid = send_relayed(
        &node,
        "bob@long-reply.example",
        "framing",
        "delivered in step",
    );
    let got = received
        .recv_timeout(DELIVERY)
        .unwrap_or_else(|_| panic!("MID {mid} not delivered:\n{}", node.mail_logs()));
    let verbs: Vec<String> = got
        .commands
        .iter()
        .map(|c| c.split([' ', ':']).next().unwrap_or("").to_string())
        .collect();
    assert_eq!(verbs, ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"], "{got:?}");
    assert!(
        got.commands[1].starts_with("MAIL FROM:<sender@example.org>"),
        "{got:?}"
    );
    assert_eq!(
        got.commands[2], "RCPT TO:<bob@long-reply.example>",
        "{got:?}"
    );
    assert!(got.body.contains("delivered in step"), "{got:?}");
    node.wait_for_log(&format!("Message finished MID {mid} done"), DELIVERY);
}
