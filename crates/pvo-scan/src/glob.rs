//! Shell-style globs for filenames and addresses: `*`, `?` and ASCII classes `[a-z]`, `[!0-9]`.
//!
//! Matching is ASCII case-insensitive (`*.EXE` matches `setup.exe`) because neither mail
//! addresses nor Windows filenames are case-significant where it matters for policy. `?`
//! matches one character, not one byte. The matcher is the classic single-backtrack
//! algorithm: time is at most pattern length times text length, with no recursion.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: Vec<u8>,
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub(crate) fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty glob".into());
        }
        let bytes = pattern.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'[' {
                match class_end(bytes, i) {
                    Some(end) => i = end,
                    None => return Err(format!("unclosed '[' in glob {pattern:?}")),
                }
            } else {
                i += 1;
            }
        }
        Ok(Glob {
            pattern: bytes.to_ascii_lowercase(),
        })
    }

    /// Whether the whole of `text` matches.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let p = &self.pattern;
        let t = text.as_bytes();
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() {
                match p[pi] {
                    b'*' => {
                        star = Some((pi, ti));
                        pi += 1;
                        continue;
                    }
                    b'?' => {
                        pi += 1;
                        ti = next_char(t, ti);
                        continue;
                    }
                    b'[' => {
                        // Patterns were validated in `new`, so the class is closed.
                        let end = class_end(p, pi).unwrap_or(p.len());
                        if class_matches(&p[pi + 1..end - 1], t[ti].to_ascii_lowercase()) {
                            pi = end;
                            ti = next_char(t, ti);
                            continue;
                        }
                    }
                    c => {
                        if c == t[ti].to_ascii_lowercase() {
                            pi += 1;
                            ti += 1;
                            continue;
                        }
                    }
                }
            }
            match star {
                Some((sp, st)) => {
                    let st = next_char(t, st);
                    star = Some((sp, st));
                    pi = sp + 1;
                    ti = st;
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

fn next_char(t: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < t.len() && t[j] & 0xc0 == 0x80 {
        j += 1;
    }
    j
}

/// Index just past the `]` closing the class that starts at `start`.
fn class_end(p: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&b'!') {
        i += 1;
    }
    // A `]` right after the opening bracket is a literal member.
    if p.get(i) == Some(&b']') {
        i += 1;
    }
    while i < p.len() {
        if p[i] == b']' {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (negate, class) = match class.split_first() {
        Some((b'!', rest)) => (true, rest),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == b'-' {
            hit |= (class[i]..=class[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= class[i] == c;
            i += 1;
        }
    }
    hit != negate
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.exe", "setup.exe", true),
            ("*.exe", "SETUP.EXE", true),
            ("*.EXE", "setup.exe", true),
            ("*.exe", "setup.exe.txt", false),
            ("*.exe", "exe", false),
            ("invoice*.pdf", "invoice-2024.pdf", true),
            ("invoice*.pdf", "my invoice.pdf", false),
            ("*@example.com", "alice@example.com", true),
            ("*@example.com", "alice@example.com.evil", false),
            ("*@*.example.com", "bob@mail.example.com", true),
            ("a?c", "abc", true),
            ("a?c", "aéc", true),
            ("a?c", "ac", false),
            ("file[0-9].doc", "file7.doc", true),
            ("file[0-9].doc", "fileX.doc", false),
            ("file[!0-9].doc", "fileX.doc", true),
            ("*", "", true),
            ("*", "anything", true),
            ("**a", "bbba", true),
            ("*a*b*c*", "xaybzc", true),
            ("*a*b*c*", "xaybz", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for &(pattern, text, want) in cases {
            let glob = Glob::new(pattern).unwrap();
            assert_eq!(glob.matches(text), want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn invalid_globs() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("file[0-9").is_err());
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let glob = Glob::new(&"*a".repeat(50)).unwrap();
        let text = "a".repeat(49) + &"b".repeat(10_000);
        assert!(!glob.matches(&text));
    }
}
