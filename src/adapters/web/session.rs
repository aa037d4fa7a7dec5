//! Web UI sessions: a random id in a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict) naming a server-side entry (user, CSRF token, expiry), and the
//! small helpers the pages need (form bodies,
//! cookies, constant-time comparison). Nothing here is persisted: a restart logs
//! everyone out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::core::state::Handles;
use crate::core::users::{Identity, Origin};

/// The session cookie's name (`__Host-`: Secure, Path=/, no Domain, so no other host
/// or insecure page can set it).
pub const COOKIE: &str = "__Host-pvo_session";
/// A session ends after this long without a request...
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// ... and in any case this long after the login.
pub const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);

/// One logged-in browser.
#[derive(Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    created: Instant,
    last: Instant,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
}

/// The session table of one node's web server.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    crate::core::users::random_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    pub fn new() -> Arc<Sessions> {
        Arc::new(Sessions::default())
    }

    /// A new session for `user`: (session id, CSRF token).
    pub fn create(&self, user: &str) -> (String, String) {
        let now = Instant::now();
        let (id, csrf) = (random_token(), random_token());
        let mut g = self.inner.lock().unwrap();
        g.sessions
            .retain(|_, s| now - s.last < IDLE && now - s.created < ABSOLUTE);
        g.sessions.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                csrf: csrf.clone(),
                created: now,
                last: now,
            },
        );
        (id, csrf)
    }

    /// The live session named `id` (its idle timer restarts); expired ones are removed.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut g = self.inner.lock().unwrap();
        let s = g.sessions.get_mut(id)?;
        if now - s.last >= IDLE || now - s.created >= ABSOLUTE {
            g.sessions.remove(id);
            return None;
        }
        s.last = now;
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.inner.lock().unwrap().sessions.remove(id);
    }
}

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Equal strings, in time that does not depend on where they differ.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `application/x-www-form-urlencoded` (also a query string) as pairs, in order.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

/// Whether the request's `Origin` (when the browser sent one) is this server: a form
/// posted from another site is refused even before its CSRF token is looked at.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host))
}

/// Checks a password (throttled and audited like an SSH login, `crate::core::login_throttle`)
/// and records a successful login.
pub async fn login(
    shared: &Arc<Handles>,
    user: &str,
    password: &str,
    peer: SocketAddr,
) -> Result<Identity, crate::commands::LoginRefused> {
    let id = crate::commands::login(shared, user, password, Origin::Web(peer), "password").await?;
    crate::commands::audit_login_success(shared, &id, "password").await;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = parse_form(b"a=1&b=x+y%21&mid=3&mid=4&bad=%zz&end=%4");
        assert_eq!(
            f,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y!".into()),
                ("mid".into(), "3".into()),
                ("mid".into(), "4".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn sessions_and_tokens() {
        let s = Sessions::default();
        let (id, csrf) = s.create("alice");
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        assert_eq!(s.get(&id).unwrap().user, "alice");
        assert!(ct_eq(&s.get(&id).unwrap().csrf, &csrf));
        assert!(!ct_eq(&csrf, "x"));
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }
}
