//! Words for a network error: the text delivery, clamd, the diagnostics and the admin
//! client put in logs and answers when a connection fails.
//!
//! Administrators know these failures by the words `telnet` prints ("Connection refused",
//! "Operation timed out"), so the common connection failures are worded that way whatever
//! the platform's own text is. They are recognised by [`std::io::ErrorKind`], not by errno
//! numbers, which differ between systems. Every other error keeps the standard library's
//! text (the system's words and its " (os error N)"), and an error that did not come from
//! the operating system keeps its own words even when its kind is one of these.

use std::io::{Error, ErrorKind};

/// The words for the connection failures administrators look for, by kind.
fn telnet_words(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::ConnectionRefused => "Connection refused",
        ErrorKind::TimedOut => "Operation timed out",
        ErrorKind::HostUnreachable => "No route to host",
        ErrorKind::NetworkUnreachable => "Network is unreachable",
        _ => return None,
    })
}

/// The text for `e`: `telnet`'s words for the common connection failures, the standard
/// library's text for anything else.
pub fn describe(e: &Error) -> String {
    match e.raw_os_error().and(telnet_words(e.kind())) {
        Some(words) => words.to_string(),
        None => e.to_string(),
    }
}

/// [`describe`] without the standard library's " (os error N)": the words alone, as
/// `telnet` prints them.
pub fn describe_plain(e: &Error) -> String {
    let text = describe(e);
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error as the operating system reports it for `kind` (found through the system's
    /// own numbering, so the table holds on any platform).
    fn os_error(kind: ErrorKind) -> Error {
        (1..200)
            .map(Error::from_raw_os_error)
            .find(|e| e.kind() == kind)
            .unwrap_or_else(|| panic!("no errno of kind {kind:?}"))
    }

    #[test]
    fn connection_failures_read_like_telnet() {
        let cases = [
            (ErrorKind::ConnectionRefused, "Connection refused"),
            (ErrorKind::TimedOut, "Operation timed out"),
            (ErrorKind::HostUnreachable, "No route to host"),
            (ErrorKind::NetworkUnreachable, "Network is unreachable"),
        ];
        for (kind, words) in cases {
            assert_eq!(describe(&os_error(kind)), words, "{kind:?}");
        }
    }

    #[test]
    fn other_errors_keep_their_own_text() {
        for kind in [
            ErrorKind::AddrInUse,
            ErrorKind::AddrNotAvailable,
            ErrorKind::PermissionDenied,
            ErrorKind::NotFound,
        ] {
            let e = os_error(kind);
            let text = describe(&e);
            assert_eq!(text, e.to_string(), "{kind:?}");
            assert!(text.contains(" (os error "), "{text}");
        }
        assert!(!describe_plain(&os_error(ErrorKind::AddrNotAvailable)).contains("os error"));
        // Not from the operating system: its own words, whatever its kind.
        let custom = Error::new(ErrorKind::TimedOut, "clamd took too long");
        assert_eq!(describe(&custom), "clamd took too long");
        assert_eq!(
            describe(&Error::from(ErrorKind::ConnectionRefused)),
            Error::from(ErrorKind::ConnectionRefused).to_string()
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_numbers_keep_their_words() {
        // The errno numbers of Linux, which the wording was first written for.
        for (errno, words) in [
            (111, "Connection refused"),
            (110, "Operation timed out"),
            (113, "No route to host"),
            (101, "Network is unreachable"),
        ] {
            assert_eq!(describe(&Error::from_raw_os_error(errno)), words);
        }
    }
}
