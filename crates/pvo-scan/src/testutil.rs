//! Builders for test inputs: zip files, OLE headers and MIME messages, made in memory so
//! every bomb and every sample is visible in the test that uses it.

/// One zip entry for [`zip`].
pub(crate) struct Entry<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
    pub flags: u16,
    /// Overrides the declared uncompressed size (to declare a huge member).
    pub declared_size: Option<u32>,
}

pub(crate) fn entry<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        data,
        flags: 0,
        declared_size: None,
    }
}

/// A stored (uncompressed) zip with a central directory. `alias` adds central directory
/// entries that point at an existing local header (the overlapping-entries construction).
pub(crate) fn zip_with(entries: &[Entry<'_>], alias: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut count = 0u16;
    let mut first_offset = None;
    for e in entries {
        let offset = out.len() as u32;
        first_offset.get_or_insert(offset);
        let size = e.declared_size.unwrap_or(e.data.len() as u32);
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&[0; 8]); // time, date, crc
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(e.data);
        push_central(&mut central, e, size, offset);
        count += 1;
    }
    for i in 0..alias {
        let e = &entries[0];
        let name = format!("alias{i}");
        let alias_entry = Entry {
            name: &name,
            data: e.data,
            flags: 0,
            declared_size: None,
        };
        push_central(
            &mut central,
            &alias_entry,
            e.data.len() as u32,
            first_offset.unwrap(),
        );
        count += 1;
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn push_central(central: &mut Vec<u8>, e: &Entry<'_>, size: u32, offset: u32) {
    central.extend_from_slice(b"PK\x01\x02");
    central.extend_from_slice(&20u16.to_le_bytes());
    central.extend_from_slice(&20u16.to_le_bytes());
    central.extend_from_slice(&e.flags.to_le_bytes());
    central.extend_from_slice(&0u16.to_le_bytes());
    central.extend_from_slice(&[0; 8]);
    central.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
    central.extend_from_slice(&size.to_le_bytes());
    central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
    central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attrs
    central.extend_from_slice(&[0; 4]); // external attrs
    central.extend_from_slice(&offset.to_le_bytes());
    central.extend_from_slice(e.name.as_bytes());
}

pub(crate) fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<Entry<'_>> = entries.iter().map(|(n, d)| entry(n, d)).collect();
    zip_with(&entries, 0)
}

/// An OLE compound file header with one directory sector holding `names` and `root_clsid`.
pub(crate) fn ole(names: &[&str], root_clsid: [u8; 16]) -> Vec<u8> {
    let mut out = vec![0u8; 512 * 2];
    out[..8].copy_from_slice(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1");
    out[0x1e..0x20].copy_from_slice(&9u16.to_le_bytes());
    out[0x30..0x34].copy_from_slice(&0u32.to_le_bytes());
    let dir = 512;
    let mut all = vec!["Root Entry"];
    all.extend_from_slice(names);
    for (i, name) in all.iter().enumerate() {
        let e = dir + i * 128;
        let utf16: Vec<u8> = name
            .encode_utf16()
            .chain(std::iter::once(0))
            .flat_map(|u| u.to_le_bytes())
            .collect();
        out[e..e + utf16.len()].copy_from_slice(&utf16);
        out[e + 0x40..e + 0x42].copy_from_slice(&(utf16.len() as u16).to_le_bytes());
        if i == 0 {
            out[e + 0x50..e + 0x60].copy_from_slice(&root_clsid);
        }
    }
    out
}

/// Standard base64 with 76-character lines, each full line ending in CRLF.
pub(crate) fn base64(data: &[u8]) -> String {
    let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data);
    let mut out = String::with_capacity(text.len() + text.len() / 38);
    for line in text.as_bytes().chunks(76) {
        // The text is ASCII, so every chunk is whole characters.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        if line.len() == 76 {
            out.push_str("\r\n");
        }
    }
    out
}

/// A multipart/mixed message with a text body and one base64 attachment.
pub(crate) fn message_with_attachment(
    subject: &str,
    body: &str,
    filename: &str,
    content_type: &str,
    data: &[u8],
) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n\
         preamble\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\
         --XYZ\r\nContent-Type: {content_type}; name=\"{filename}\"\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--XYZ--\r\n",
        base64(data)
    )
    .into_bytes()
}

/// A single-part text/plain message.
pub(crate) fn text_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A deterministic pseudo-random generator (xorshift64*) for randomized tests: the same
/// seed gives the same inputs on every run, so a failure can be reproduced.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Up to `max_pieces` pieces, each picked from `pieces`, concatenated.
    pub(crate) fn text(&mut self, pieces: &[&str], max_pieces: usize) -> String {
        let n = self.below(max_pieces + 1);
        (0..n).map(|_| pieces[self.below(pieces.len())]).collect()
    }
}
