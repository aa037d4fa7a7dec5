//! A client for ClamAV's `clamd`: INSTREAM over TCP or a unix socket, with
//! timeouts and a pool of `IDSESSION` connections.
//!
//! Verdicts follow the appliance: clean, infected (with the signature name),
//! or unscannable — encrypted content, limits exceeded (`Heuristics.Limits.
//! Exceeded.*`, which clamd reports only with `AlertExceedsMax yes`, so the
//! node's clamd must run with it), or an engine error on this content. A
//! daemon that cannot be reached, times out or answers nonsense is an `Err`:
//! the caller leaves the message queued (temporary failure) and never passes
//! it unscanned.
//!
//! # Security
//! clamd's replies are parsed defensively: bounded length, and anything that is
//! not one of the documented forms is an error, never "clean".

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// How clamd chunks are sent; clamd's default StreamMaxLength is 25 MiB.
const CHUNK: usize = 64 * 1024;
const MAX_REPLY: usize = 4096;

pub use crate::core::scanning::virus::{ClamdAddr, Unscannable, VirusVerdict};

#[derive(Debug, thiserror::Error)]
pub enum ClamdError {
    #[error("cannot connect to clamd at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("clamd at {addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("clamd at {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

struct Session {
    io: Box<dyn Conn>,
    next_id: u64,
}

pub struct Clamd {
    addr: ClamdAddr,
    timeout: Duration,
    pool: Mutex<Vec<Session>>,
    pool_size: usize,
}

/// The pipeline's virus scanner for an `[antivirus]` section (wired by `node` into
/// `scanning::Scanner`): a pool of up to 8 sessions.
pub fn scanner_for(
    av: &crate::core::scanning::Antivirus,
) -> Result<Arc<dyn crate::core::scanning::virus::VirusScanner>, String> {
    let addr: ClamdAddr = av.clamd.parse()?;
    Ok(Arc::new(Clamd::new(
        addr,
        Duration::from_secs(av.timeout),
        8,
    )))
}

impl crate::core::scanning::virus::VirusScanner for Clamd {
    fn scan<'a>(&'a self, data: &'a [u8]) -> crate::core::scanning::virus::ScanFuture<'a> {
        Box::pin(async move {
            Clamd::scan(self, data)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
}

impl Clamd {
    pub fn new(addr: ClamdAddr, timeout: Duration, pool_size: usize) -> Clamd {
        Clamd {
            addr,
            timeout,
            pool: Mutex::new(Vec::new()),
            pool_size,
        }
    }

    fn addr_text(&self) -> String {
        match &self.addr {
            ClamdAddr::Tcp(a) => a.to_string(),
            ClamdAddr::Unix(p) => p.display().to_string(),
        }
    }

    async fn connect(&self) -> Result<Session, ClamdError> {
        let connect = async {
            let io: Box<dyn Conn> = match &self.addr {
                ClamdAddr::Tcp(a) => {
                    let s = TcpStream::connect(a).await?;
                    // Small writes (the chunk terminator) must not wait for
                    // the peer's delayed ACK: 40 ms per scan otherwise.
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                ClamdAddr::Unix(p) => Box::new(UnixStream::connect(p).await?),
            };
            Ok::<_, std::io::Error>(io)
        };
        let mut io = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                return Err(ClamdError::Connect {
                    addr: self.addr_text(),
                    reason: crate::net::net_error::describe(&e),
                })
            }
            Err(_) => {
                return Err(ClamdError::Timeout {
                    addr: self.addr_text(),
                    secs: self.timeout.as_secs(),
                })
            }
        };
        // IDSESSION lets one connection carry many scans; replies carry the
        // request number so they cannot be confused.
        io.write_all(b"zIDSESSION\0")
            .await
            .map_err(|e| self.proto(format!("write: {e}")))?;
        Ok(Session { io, next_id: 1 })
    }

    fn proto(&self, reason: String) -> ClamdError {
        ClamdError::Protocol {
            addr: self.addr_text(),
            reason,
        }
    }

    /// `PING` → `PONG`: is the daemon up?
    pub async fn ping(&self) -> Result<(), ClamdError> {
        let run = async {
            let mut io: Box<dyn Conn> = match &self.addr {
                ClamdAddr::Tcp(a) => Box::new(TcpStream::connect(a).await?),
                ClamdAddr::Unix(p) => Box::new(UnixStream::connect(p).await?),
            };
            io.write_all(b"zPING\0").await?;
            let mut buf = Vec::new();
            io.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(b)) if b.starts_with(b"PONG") => Ok(()),
            Ok(Ok(b)) => Err(self.proto(format!(
                "unexpected answer to PING: {:?}",
                String::from_utf8_lossy(&b)
            ))),
            Ok(Err(e)) => Err(ClamdError::Connect {
                addr: self.addr_text(),
                reason: crate::net::net_error::describe(&e),
            }),
            Err(_) => Err(ClamdError::Timeout {
                addr: self.addr_text(),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// Scans `data` (a whole message; clamd decodes MIME itself).
    pub async fn scan(&self, data: &[u8]) -> Result<VirusVerdict, ClamdError> {
        // A pooled session may have been closed by clamd's IdleTimeout: on a
        // failure with a pooled session, try once more on a fresh one.
        let pooled = self.pool.lock().unwrap().pop();
        if let Some(session) = pooled {
            if let Ok(v) = self.scan_on(session, data).await {
                return Ok(v);
            }
        }
        let session = self.connect().await?;
        self.scan_on(session, data).await
    }

    async fn scan_on(&self, mut s: Session, data: &[u8]) -> Result<VirusVerdict, ClamdError> {
        let id = s.next_id;
        s.next_id += 1;
        let work = async {
            let mut frame = Vec::with_capacity(data.len().min(CHUNK) + 16);
            frame.extend_from_slice(b"zINSTREAM\0");
            let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
            for (n, chunk) in chunks.iter().enumerate() {
                frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
                frame.extend_from_slice(chunk);
                // The last chunk goes out together with the terminator.
                if n + 1 < chunks.len() {
                    s.io.write_all(&frame).await?;
                    frame.clear();
                }
            }
            frame.extend_from_slice(&0u32.to_be_bytes());
            s.io.write_all(&frame).await?;
            s.io.flush().await?;
            let mut reply = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                let n = s.io.read(&mut byte).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "clamd closed the connection",
                    ));
                }
                if byte[0] == 0 {
                    break;
                }
                reply.push(byte[0]);
                if reply.len() > MAX_REPLY {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "reply too long",
                    ));
                }
            }
            Ok(reply)
        };
        let reply = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.proto(e.to_string())),
            Err(_) => {
                return Err(ClamdError::Timeout {
                    addr: self.addr_text(),
                    secs: self.timeout.as_secs(),
                })
            }
        };
        let text = String::from_utf8_lossy(&reply).to_string();
        let verdict = parse_reply(&text, id).map_err(|r| self.proto(r))?;
        let mut pool = self.pool.lock().unwrap();
        if pool.len() < self.pool_size {
            pool.push(s);
        }
        Ok(verdict)
    }
}

/// Parses `"<id>: stream: OK"`, `"<id>: stream: NAME FOUND"`, `"<id>: ... ERROR"`.
pub fn parse_reply(text: &str, id: u64) -> Result<VirusVerdict, String> {
    let rest = text
        .strip_prefix(&format!("{id}: "))
        .ok_or_else(|| format!("reply for another request: {text:?}"))?;
    if let Some(err) = rest.strip_suffix(" ERROR") {
        // Errors about this content (size limit, parse failure) make it
        // unscannable; the message is not passed as clean.
        let err = err.trim_start_matches("stream: ").to_string();
        if err.contains("size limit exceeded") {
            return Ok(VirusVerdict::Unscannable(Unscannable::LimitsExceeded(err)));
        }
        return Ok(VirusVerdict::Unscannable(Unscannable::EngineError(err)));
    }
    let body = rest
        .strip_prefix("stream: ")
        .ok_or_else(|| format!("unexpected reply: {text:?}"))?;
    if body == "OK" {
        return Ok(VirusVerdict::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        let name = name.to_string();
        if name.starts_with("Heuristics.Limits.Exceeded") {
            return Ok(VirusVerdict::Unscannable(Unscannable::LimitsExceeded(name)));
        }
        if name.starts_with("Heuristics.Encrypted") {
            return Ok(VirusVerdict::Unscannable(Unscannable::Encrypted(name)));
        }
        return Ok(VirusVerdict::Infected(name));
    }
    Err(format!("unexpected reply: {text:?}"))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn replies() {
        let cases: &[(&str, Result<VirusVerdict, ()>)] = &[
            ("1: stream: OK", Ok(VirusVerdict::Clean)),
            (
                "2: stream: Eicar-Test.Custom.UNOFFICIAL FOUND",
                Ok(VirusVerdict::Infected(
                    "Eicar-Test.Custom.UNOFFICIAL".into(),
                )),
            ),
            (
                "3: stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND",
                Ok(VirusVerdict::Unscannable(Unscannable::LimitsExceeded(
                    "Heuristics.Limits.Exceeded.MaxRecursion".into(),
                ))),
            ),
            (
                "4: stream: Heuristics.Encrypted.Zip FOUND",
                Ok(VirusVerdict::Unscannable(Unscannable::Encrypted(
                    "Heuristics.Encrypted.Zip".into(),
                ))),
            ),
            (
                "5: INSTREAM size limit exceeded. ERROR",
                Ok(VirusVerdict::Unscannable(Unscannable::LimitsExceeded(
                    "INSTREAM size limit exceeded.".into(),
                ))),
            ),
            ("6: stream: garbage", Err(())),
            ("7: whatever", Err(())),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let got = parse_reply(text, i as u64 + 1).map_err(|_| ());
            assert_eq!(&got, want, "{text}");
        }
        assert!(
            parse_reply("9: stream: OK", 1).is_err(),
            "a reply for another request is never taken"
        );
    }

    /// A private clamd on loopback with a generated signature database (no
    /// signatures are downloaded). Dropped = killed.
    pub struct TestClamd {
        pub addr: SocketAddr,
        child: std::process::Child,
        _dir: tempfile::TempDir,
    }

    impl Drop for TestClamd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub const EICAR: &[u8] =
        b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

    pub fn start_clamd() -> TestClamd {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        let hex = hex::encode(EICAR);
        std::fs::write(
            db.join("pvo-test.ndb"),
            format!(
                "Eicar-Test.Custom:0:*:{hex}\nPvo-Test.Marker:0:*:{}\n",
                hex::encode(b"PVO-TEST-VIRUS-MARKER")
            ),
        )
        .unwrap();
        // clamd has no "port 0": take a free port from the kernel and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "DatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\nAlertExceedsMax yes\nTemporaryDirectory {}\nMaxRecursion 5\n",
                db.display(),
                tmp.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("clamd")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("clamd (Debian clamav-daemon, installed by scripts/install-test-deps)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"zPING\0");
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).is_ok() && &b == b"PONG\0" {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "clamd did not answer PING within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestClamd {
            addr,
            child,
            _dir: dir,
        }
    }

    /// EICAR in `depth` nested deflated zips, built with Python's zipfile
    /// (deflate, so the signature bytes never appear verbatim at the top).
    fn nested_zip(depth: usize) -> Vec<u8> {
        let script = format!(
            "import io,sys,zipfile\ndata=sys.stdin.buffer.read()\nname='eicar.com'\nfor i in range({depth}):\n    b=io.BytesIO()\n    with zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED) as z: z.writestr(name,data)\n    data=b.getvalue(); name='layer%d.zip'%i\nsys.stdout.buffer.write(data)\n"
        );
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(EICAR).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[tokio::test]
    async fn real_clamd_verdicts() {
        let d = start_clamd();
        let c = Clamd::new(ClamdAddr::Tcp(d.addr), Duration::from_secs(30), 4);
        c.ping().await.unwrap();
        assert_eq!(
            c.scan(b"Subject: hello\r\n\r\nnothing here\r\n")
                .await
                .unwrap(),
            VirusVerdict::Clean
        );
        let mime = b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nWDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=\r\n--b--\r\n";
        match c.scan(mime).await.unwrap() {
            VirusVerdict::Infected(name) => {
                assert!(name.starts_with("Eicar-Test.Custom"), "{name}")
            }
            other => panic!("EICAR in MIME: {other:?}"),
        }
        // The pooled session is reused for the next scans.
        for _ in 0..3 {
            assert!(matches!(
                c.scan(EICAR).await.unwrap(),
                VirusVerdict::Infected(_)
            ));
        }
        // EICAR in 20 nested zips: beyond MaxRecursion, with AlertExceedsMax it
        // is "limits exceeded" — unscannable, never clean.
        match c.scan(&nested_zip(20)).await.unwrap() {
            VirusVerdict::Unscannable(Unscannable::LimitsExceeded(n)) => {
                assert!(n.contains("Limits.Exceeded") || n.contains("limit"), "{n}")
            }
            VirusVerdict::Infected(n) => panic!("clamd looked deeper than MaxRecursion: {n}"),
            other => panic!("20 nested zips: {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_clamd_is_an_error_never_clean() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Clamd::new(
            ClamdAddr::Tcp(format!("127.0.0.1:{port}").parse().unwrap()),
            Duration::from_secs(5),
            1,
        );
        let e = c.scan(EICAR).await.unwrap_err();
        assert!(e.to_string().contains("Connection refused"), "{e}");
    }
}
