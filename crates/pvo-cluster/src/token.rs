//! Single-use join tokens: what an administrator copies from a member to a machine that
//! is to join, instead of typing an Administrator's password on it.
//!
//! `pvojoin1.MEMBER.HOSTKEY.SECRET`, each part unpadded base64url: the member's SSH address
//! (`host:port`) to join through, the SHA-256 fingerprint of that member's SSH host key
//! (the joining machine refuses any other key, so a token cannot be redirected to an
//! impostor), and a 32-byte secret. The cluster stores only a hash of the secret, with an
//! expiry, and marks it used in the same transaction as the join, so a token works once.
//!
//! Who can send one: anybody who can reach a member's SSH port. What they gain with a
//! stolen, unused, unexpired token: a place in the cluster, hence its configuration; so
//! tokens are short-lived and single-use, and parsing here is strict (a token that does not
//! parse exactly is refused, never guessed at).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use thiserror::Error;

const PREFIX: &str = "pvojoin1";

/// A join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// `host:port` of the member's SSH server.
    pub member: String,
    /// SHA-256 of the member's SSH host key.
    pub host_key: [u8; 32],
    pub secret: [u8; 32],
}

impl fmt::Debug for JoinToken {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("member", &self.member)
            .field("host_key", &URL_SAFE_NO_PAD.encode(self.host_key))
            .finish_non_exhaustive()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("not a join token: it must begin with {PREFIX}. (copy it whole from `clusterconfig jointoken` on a member)")]
    Prefix,
    #[error(
        "the join token has {0} parts separated by '.', not 4: it was cut or joined to other text"
    )]
    Parts(usize),
    #[error("the {0} of the join token is not base64url")]
    Encoding(&'static str),
    #[error("the {part} of the join token is {got} bytes, not 32")]
    Length { part: &'static str, got: usize },
    #[error("the member address {0:?} of the join token is not host:port")]
    Member(String),
}

impl JoinToken {
    pub fn new(
        member: &str,
        host_key: [u8; 32],
        secret: [u8; 32],
    ) -> Result<JoinToken, TokenError> {
        check_member(member)?;
        Ok(JoinToken {
            member: member.to_string(),
            host_key,
            secret,
        })
    }
}

fn check_member(member: &str) -> Result<(), TokenError> {
    let bad = || TokenError::Member(member.to_string());
    let (host, port) = member.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn bytes32(part: &'static str, text: &str) -> Result<[u8; 32], TokenError> {
    let v = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Encoding(part))?;
    let got = v.len();
    v.try_into().map_err(|_| TokenError::Length { part, got })
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('.').collect();
        if parts.first() != Some(&PREFIX) {
            return Err(TokenError::Prefix);
        }
        let [_, member, host_key, secret] = parts[..] else {
            return Err(TokenError::Parts(parts.len()));
        };
        let member = URL_SAFE_NO_PAD
            .decode(member)
            .ok()
            .and_then(|m| String::from_utf8(m).ok())
            .ok_or(TokenError::Encoding("member address"))?;
        let host_key = bytes32("host key fingerprint", host_key)?;
        let secret = bytes32("secret", secret)?;
        JoinToken::new(&member, host_key, secret)
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            URL_SAFE_NO_PAD.encode(self.member.as_bytes()),
            URL_SAFE_NO_PAD.encode(self.host_key),
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken::new("gw1.example.com:22", [7; 32], [9; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_no_secret_in_debug() {
        let t = token();
        let text = t.to_string();
        assert!(text.starts_with("pvojoin1."));
        assert_eq!(text.parse::<JoinToken>().unwrap(), t);
        assert_eq!(format!("  {text}\n").parse::<JoinToken>().unwrap(), t);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&URL_SAFE_NO_PAD.encode([9u8; 32])), "{dbg}");
        for m in ["[::1]:2222", "10.0.0.1:22", "a:65535"] {
            assert!(JoinToken::new(m, [0; 32], [0; 32]).is_ok(), "{m}");
        }
    }

    #[test]
    fn strict_refusals() {
        let text = token().to_string();
        let parts: Vec<&str> = text.split('.').collect();
        let cases: Vec<(String, TokenError)> = vec![
            ("hello".into(), TokenError::Prefix),
            (format!("x{text}"), TokenError::Prefix),
            (format!("{text}.x"), TokenError::Parts(5)),
            (parts[..3].join("."), TokenError::Parts(3)),
            (
                format!("{}.{}.{}.{}=", parts[0], parts[1], parts[2], parts[3]),
                TokenError::Encoding("secret"),
            ),
            (
                format!("{}.{}.{}.{}", parts[0], parts[1], &parts[2][..20], parts[3]),
                TokenError::Length {
                    part: "host key fingerprint",
                    got: 15,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<JoinToken>(), Err(want), "{input}");
        }
        for m in [
            "gw1",
            "gw1:",
            "gw1:0",
            "gw1:70000",
            ":22",
            "[::1:22",
            "a b:22",
            "gw1:+22",
        ] {
            assert_eq!(
                JoinToken::new(m, [0; 32], [0; 32]),
                Err(TokenError::Member(m.into())),
                "{m}"
            );
        }
    }
}
