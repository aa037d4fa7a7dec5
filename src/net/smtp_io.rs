//! SMTP over a byte stream: the one [`Io`] trait every SMTP connection is used through (the
//! server's sessions, the delivery client, the CPQ preflight, over TCP, TLS or an in-memory
//! pipe), and the one reader of SMTP replies from such a stream ([`read_reply`]), which
//! delivery, the CPQ preflight and the diagnostics share.
//!
//! The reading itself is `pvo_proto::reply`: 4 KiB kept per line, the rest of a longer line
//! skipped (never taken for a reply of its own), 100 lines per reply. smtp-proto's response
//! parser is not used for this: it bounds the whole reply rather than each line, and when a
//! line is too long it stops with an error and leaves the line's tail in the input, where
//! the next parse would take it for a reply; it also keeps no lines (their texts are joined
//! and the enhanced status code split off), and the diagnostics print replies line by line.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite};

/// A connection's byte stream, whatever carries it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why no reply could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Timeout,
    Closed,
    Malformed(String),
    Io(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Timeout => f.write_str("no reply in time"),
            ReadError::Closed => f.write_str("the server closed the connection"),
            ReadError::Malformed(l) => write!(f, "malformed reply {l:?}"),
            ReadError::Io(e) => f.write_str(e),
        }
    }
}

/// Reads one SMTP reply within `timeout` with `pvo_proto::reply`, leaving the bytes after
/// it in `r`'s buffer (the next pipelined reply).
pub async fn read_reply<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<pvo_proto::reply::Reply, ReadError> {
    use pvo_proto::reply::{ReplyError, ReplyReader};
    let deadline = tokio::time::Instant::now() + timeout;
    let mut reader = ReplyReader::new();
    loop {
        let buf = match tokio::time::timeout_at(deadline, r.fill_buf()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(e)) => return Err(ReadError::Io(crate::net::net_error::describe_plain(&e))),
            Ok(Ok([])) => return Err(ReadError::Closed),
            Ok(Ok(buf)) => buf,
        };
        let (used, res) = reader.feed(buf);
        r.consume(used);
        match res {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(ReplyError::Malformed(l)) => return Err(ReadError::Malformed(printable(&l))),
            Err(e @ ReplyError::TooManyLines(_)) => {
                return Err(ReadError::Malformed(e.to_string()))
            }
        }
    }
}

/// Replaces control characters (a hostile server could send terminal escapes).
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(data: &[u8], capacity: usize) -> Vec<Result<Vec<String>, ReadError>> {
        let mut r = tokio::io::BufReader::with_capacity(capacity, data);
        let mut out = Vec::new();
        loop {
            match read_reply(&mut r, Duration::from_secs(1)).await {
                Err(ReadError::Closed) => return out,
                Ok(reply) => out.push(Ok(reply.lines)),
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn replies_in_any_pieces() {
        let data = b"220 mx ESMTP\r\n250-mx\r\n250-SIZE 10\r\n250 8BITMIME\r\n354 go\n";
        for capacity in [1, 2, 3, 7, 64] {
            assert_eq!(
                read_all(data, capacity).await,
                [
                    Ok(vec!["220 mx ESMTP".to_string()]),
                    Ok(vec![
                        "250-mx".to_string(),
                        "250-SIZE 10".to_string(),
                        "250 8BITMIME".to_string()
                    ]),
                    Ok(vec!["354 go".to_string()]),
                ],
                "read {capacity} bytes at a time"
            );
        }
    }

    #[tokio::test]
    async fn what_is_not_a_reply() {
        let cases: [(&[u8], ReadError); 3] = [
            (
                b"HTTP/1.1 400\r\n",
                ReadError::Malformed("HTTP/1.1 400".into()),
            ),
            // A control character where the separator belongs, shown safely.
            (
                b"220\x1b[2J hi\r\n",
                ReadError::Malformed("220?[2J hi".into()),
            ),
            (b"\x1bx\r\n", ReadError::Malformed("?x".into())),
        ];
        for (data, want) in cases {
            let got = read_all(data, 64).await;
            assert_eq!(got.last(), Some(&Err(want)), "{data:?}: {got:?}");
        }
        // More lines than a reply may have.
        let many = "250-x\r\n".repeat(pvo_proto::reply::MAX_LINES + 1);
        assert!(matches!(
            read_all(many.as_bytes(), 4096).await.last(),
            Some(Err(ReadError::Malformed(_)))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (mut client, _server) = tokio::io::duplex(64);
        let mut r = tokio::io::BufReader::new(&mut client);
        assert_eq!(
            read_reply(&mut r, Duration::from_millis(20)).await,
            Err(ReadError::Timeout)
        );
    }
}
