//! The admin protocol: the one-line JSON [`Request`] a channel sends to the node and the
//! [`Response`] it reads back, and where the node's unix socket lives.
//!
//! It belongs to the command set, not to the admin socket that carries it: the socket's
//! server and its client, the SSH shell, the web UI, the REST API and the CLI all build a
//! `Request` or read a `Response`, and none of them may import another channel. Every
//! response has the appliance-style `text` the CLI prints and structured `data` for
//! `--json`, so the two never disagree about the facts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::command::ErrorKind;
use super::command::{Command, CommandError};

/// One command and who runs it. On the socket it is one JSON line
/// `{"command": NAME, "args": {..}, "user": .., "auth": ..}` ([`RawRequest`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawRequest", into = "RawRequest")]
pub struct Request {
    pub command: Command,
    /// Who runs the command: the local OS user on the way in; the node sets it to the
    /// authenticated user before any handler runs.
    pub user: String,
    /// `pvo --user NAME`: run as this node user instead of the local superuser.
    pub auth: Option<Credentials>,
    /// `--level cluster|group:NAME|machine`: the cluster level a configuration command
    /// reads or changes (`None`: the level each setting is at).
    pub level: Option<String>,
}

impl Request {
    /// Who the history and the log name as the author of a change ("unknown" for nobody).
    pub fn author(&self) -> String {
        match self.user.trim() {
            "" => "unknown".to_string(),
            u => u.to_string(),
        }
    }

    /// `command` run by nobody in particular: the channel's identity says who.
    pub fn new(command: Command) -> Request {
        Request {
            command,
            user: String::new(),
            auth: None,
            level: None,
        }
    }
}

/// The wire form of a [`Request`], before its command is checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawRequest {
    pub command: String,
    #[serde(default)]
    pub args: serde_json::Value,
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Credentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl TryFrom<RawRequest> for Request {
    type Error = CommandError;

    fn try_from(r: RawRequest) -> Result<Request, CommandError> {
        Ok(Request {
            command: Command::from_parts(&r.command, r.args)?,
            user: r.user,
            auth: r.auth,
            level: r.level,
        })
    }
}

impl From<Request> for RawRequest {
    fn from(r: Request) -> RawRequest {
        let parts = r.command.to_parts();
        RawRequest {
            command: parts.command,
            args: parts.args,
            user: r.user,
            auth: r.auth,
            level: r.level,
        }
    }
}

/// A node user's name and password, checked by the node (`commands::dispatch`).
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password (requests end up in debug logs).
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    /// What the appliance would print.
    pub text: String,
    /// The same facts, structured.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Why it failed (`None` when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

impl Response {
    pub fn ok(text: impl Into<String>, data: serde_json::Value) -> Response {
        Response {
            ok: true,
            text: text.into(),
            data,
            kind: None,
        }
    }

    /// A failure of the command or its arguments ([`ErrorKind::Invalid`]).
    pub fn error(text: impl Into<String>) -> Response {
        Response::fail(ErrorKind::Invalid, text)
    }

    /// "Not changed": an edit whose result would not validate, naming the key.
    pub fn not_valid(e: &crate::core::config::ConfigError) -> Response {
        let place = if e.key.is_empty() {
            String::new()
        } else {
            format!("key {}: ", e.key)
        };
        Response::error(format!(
            "Not changed: the configuration would not be valid: {place}{}",
            e.message
        ))
    }

    /// A failure of the given kind.
    pub fn fail(kind: ErrorKind, text: impl Into<String>) -> Response {
        let text = text.into();
        Response {
            ok: false,
            data: serde_json::json!({ "error": text }),
            text,
            kind: Some(kind),
        }
    }
}

/// A failed command's reply: its kind and its wording.
impl From<CommandError> for Response {
    fn from(e: CommandError) -> Response {
        Response::fail(e.kind, e.text)
    }
}

/// Where a node whose data directory is `data_dir` listens for admin requests.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("admin.sock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_keep_their_wire_form() {
        let cases = [
            ("status", json!({ "detail": true })),
            ("quarantine", json!({ "action": "show", "mid": 482 })),
            ("deliveryconfig", json!({ "max_concurrency": 40 })),
            (
                "userconfig",
                json!({ "action": "role", "sub": "new", "name": "Desk" }),
            ),
        ];
        for (name, args) in cases {
            let c = Command::from_parts(name, args.clone()).unwrap();
            let line = serde_json::to_string(&Request::new(c.clone())).unwrap();
            let raw: RawRequest = serde_json::from_str(&line).unwrap();
            assert_eq!((raw.command.as_str(), &raw.args), (name, &args), "{line}");
            assert_eq!(Request::try_from(raw).unwrap().command, c);
        }
        let raw: RawRequest = serde_json::from_str(r#"{"command":"reboot"}"#).unwrap();
        let e = Request::try_from(raw).unwrap_err();
        assert_eq!(
            (e.kind, e.text.as_str()),
            (ErrorKind::Invalid, "Unknown command: reboot")
        );
    }

    #[test]
    fn errors_become_replies_of_their_kind() {
        let r = Response::from(CommandError::not_found("There is no commit 9"));
        assert!(!r.ok);
        assert_eq!(r.kind, Some(ErrorKind::NotFound));
        assert_eq!(r.text, "There is no commit 9");
        assert_eq!(r.data, json!({ "error": "There is no commit 9" }));
    }
}
