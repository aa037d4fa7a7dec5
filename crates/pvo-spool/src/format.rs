//! The on-disk format: segment headers and records, encoded and decoded without IO.
//!
//! Recovery and the writer share this one definition, and the decoder can be tested on byte
//! vectors. The layout is documented in the crate documentation; the constants here are the
//! authority. All integers are little-endian.
//!
//! Every record header carries two checksums: one over the payload and one over the header
//! itself. The header checksum is what lets recovery tell a torn tail (a header that is
//! intact but whose payload runs past the end of the file) from a corrupted length field in
//! the middle of a file, which would otherwise look exactly like a torn tail and make recovery
//! truncate away every record after it.
//!
//! # Security
//!
//! The decoders read files that a crash may have torn, a disk may have corrupted, or a person
//! may have edited. Every length is checked against the bytes actually present before it is
//! used, offsets are computed with checked arithmetic, and no allocation is sized from a length
//! that has not been checked against the slice. A record whose checksums match but whose
//! structure is inconsistent is rejected, not trusted.

use crate::crc::{crc32, Crc32};

/// The first eight bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"PVOSPOOL";
/// Bumped on any incompatible change; recovery moves aside segments of another version.
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: u64 = 40;
/// The first byte of every record. Not zero, so that a zero-filled tail never parses.
pub(crate) const RECORD_MAGIC: u8 = 0xA7;
pub(crate) const RECORD_HEADER_LEN: u64 = 24;
/// The payload length field is 32 bits.
pub(crate) const MAX_PAYLOAD: u64 = u32::MAX as u64;

const H: usize = RECORD_HEADER_LEN as usize;

/// Record types. The numbers are part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A new message: `meta_len: u32, meta, body`.
    Message = 1,
    /// Progress of a message: opaque bytes.
    Update = 2,
    /// The message is finished; its earlier records are dead.
    Finish = 3,
    /// A message copied forward by compaction together with its updates so far:
    /// `meta_len: u32, meta, n: u32, n × (len: u32, data), body`.
    Relocated = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::Update),
            3 => Some(Kind::Finish),
            4 => Some(Kind::Relocated),
            _ => None,
        }
    }
}

/// The fields of a segment header that recovery uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub seq: u64,
    /// The highest message id the spool had seen when this segment was created. It keeps
    /// `Recovered::max_mid` from going backwards after every message has been finished and
    /// every segment holding one deleted.
    pub mid_floor: u64,
}

pub(crate) fn encode_segment_header(seq: u64, mid_floor: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // 12..16: flags, zero. 32..36: reserved, zero.
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&mid_floor.to_le_bytes());
    let crc = crc32(&h[0..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment header; the error is a reason a person can read.
pub(crate) fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, String> {
    let want = SEGMENT_HEADER_LEN as usize;
    if b.len() < want {
        return Err(format!(
            "file is {} bytes, shorter than the {want}-byte segment header (a crash while creating it?)",
            b.len()
        ));
    }
    if &b[0..8] != SEGMENT_MAGIC {
        return Err("no spool segment magic at the start of the file".to_string());
    }
    if u32_at(b, 36) != crc32(&b[0..36]) {
        return Err("segment header checksum mismatch".to_string());
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported segment format version {version} (this build reads {FORMAT_VERSION})"
        ));
    }
    if u32_at(b, 12) != 0 || u32_at(b, 32) != 0 {
        return Err("unknown flags in the segment header".to_string());
    }
    Ok(SegmentHeader {
        seq: u64_at(b, 16),
        mid_floor: u64_at(b, 24),
    })
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub kind: Kind,
    pub len: u32,
    pub mid: u64,
    pub payload_crc: u32,
}

pub(crate) fn decode_record_header(b: &[u8; H]) -> Result<RecordHeader, String> {
    if b[0] != RECORD_MAGIC {
        return Err(format!("bad record magic 0x{:02x}", b[0]));
    }
    if u32_at(b, 20) != crc32(&b[0..20]) {
        return Err("record header checksum mismatch".to_string());
    }
    let Some(kind) = Kind::from_u8(b[1]) else {
        return Err(format!("unknown record type {}", b[1]));
    };
    if b[2] != 0 || b[3] != 0 {
        return Err("nonzero reserved bytes in the record header".to_string());
    }
    Ok(RecordHeader {
        kind,
        len: u32_at(b, 4),
        mid: u64_at(b, 8),
        payload_crc: u32_at(b, 16),
    })
}

/// An encoded record with the position of the body inside it, so that the writer can record
/// where a message's body lives without parsing what it just wrote.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    /// Offset of the body from the start of the record (header included).
    pub body_start: u64,
}

/// Builds a record from payload parts, checksumming them as they are copied.
fn encode(kind: Kind, mid: u64, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(len as u64 <= MAX_PAYLOAD);
    let mut v = Vec::with_capacity(H + len);
    v.extend_from_slice(&[RECORD_MAGIC, kind as u8, 0, 0]);
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&mid.to_le_bytes());
    let mut crc = Crc32::new();
    for p in parts {
        crc.update(p);
    }
    v.extend_from_slice(&crc.finish().to_le_bytes());
    let header_crc = crc32(&v[0..20]);
    v.extend_from_slice(&header_crc.to_le_bytes());
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

/// Checks a payload length; the error is the length, for `SpoolError::TooLarge`.
fn check_len(len: u64) -> Result<u32, u64> {
    if len > MAX_PAYLOAD {
        Err(len)
    } else {
        Ok(len as u32)
    }
}

pub(crate) fn message(mid: u64, meta: &[u8], body: &[u8]) -> Result<Encoded, u64> {
    check_len(4 + meta.len() as u64 + body.len() as u64)?;
    let meta_len = check_len(meta.len() as u64)?.to_le_bytes();
    Ok(Encoded {
        bytes: encode(Kind::Message, mid, &[&meta_len, meta, body]),
        body_start: (H + 4 + meta.len()) as u64,
    })
}

pub(crate) fn update(mid: u64, data: &[u8]) -> Result<Vec<u8>, u64> {
    check_len(data.len() as u64)?;
    Ok(encode(Kind::Update, mid, &[data]))
}

pub(crate) fn finish(mid: u64) -> Vec<u8> {
    encode(Kind::Finish, mid, &[])
}

pub(crate) fn relocated(
    mid: u64,
    meta: &[u8],
    updates: &[Vec<u8>],
    body: &[u8],
) -> Result<Encoded, u64> {
    // Everything before the body is small, so it is gathered into one buffer and the body is
    // passed as a separate part to avoid a second copy of it.
    let mut head = Vec::new();
    head.extend_from_slice(&check_len(meta.len() as u64)?.to_le_bytes());
    head.extend_from_slice(meta);
    head.extend_from_slice(&check_len(updates.len() as u64)?.to_le_bytes());
    for u in updates {
        head.extend_from_slice(&check_len(u.len() as u64)?.to_le_bytes());
        head.extend_from_slice(u);
    }
    check_len(head.len() as u64 + body.len() as u64)?;
    Ok(Encoded {
        bytes: encode(Kind::Relocated, mid, &[&head, body]),
        body_start: (H + head.len()) as u64,
    })
}

/// A decoded payload. Offsets are relative to the start of the payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Payload<'a> {
    Message {
        meta: &'a [u8],
        body_start: u64,
    },
    Update {
        data: &'a [u8],
    },
    Finish,
    Relocated {
        meta: &'a [u8],
        updates: Vec<&'a [u8]>,
        body_start: u64,
    },
}

pub(crate) fn payload_crc_ok(h: &RecordHeader, payload: &[u8]) -> bool {
    crc32(payload) == h.payload_crc
}

/// Decodes a payload whose checksum has already been verified. An error here means the
/// record was written wrong or deliberately forged, since a torn write cannot pass the checksum.
pub(crate) fn decode_payload<'a>(h: &RecordHeader, p: &'a [u8]) -> Result<Payload<'a>, String> {
    let mut r = Reader { b: p, pos: 0 };
    let out = match h.kind {
        Kind::Message => {
            let meta = r
                .counted()
                .ok_or("message meta length exceeds the record")?;
            Payload::Message {
                meta,
                body_start: r.pos as u64,
            }
        }
        Kind::Update => Payload::Update { data: p },
        Kind::Finish => {
            if !p.is_empty() {
                return Err("finish record with a payload".to_string());
            }
            Payload::Finish
        }
        Kind::Relocated => {
            let meta = r
                .counted()
                .ok_or("relocated meta length exceeds the record")?;
            let n = r
                .u32()
                .ok_or("relocated record truncated before its update count")?;
            // Each update needs at least its 4-byte length, which bounds the allocation by the
            // bytes actually present rather than by the count field.
            if n as usize > r.remaining() / 4 {
                return Err(format!(
                    "relocated record claims {n} updates, more than fit"
                ));
            }
            let mut updates = Vec::with_capacity(n as usize);
            for i in 0..n {
                let u = r
                    .counted()
                    .ok_or_else(|| format!("relocated update {i} exceeds the record"))?;
                updates.push(u);
            }
            Payload::Relocated {
                meta,
                updates,
                body_start: r.pos as u64,
            }
        }
    };
    Ok(out)
}

/// A bounds-checked cursor over a payload.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// A `u32` length followed by that many bytes.
    fn counted(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n as usize)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(rec: &[u8]) -> (RecordHeader, &[u8]) {
        let hb: &[u8; H] = rec[..H].try_into().unwrap();
        let h = decode_record_header(hb).unwrap();
        assert_eq!(h.len as usize, rec.len() - H);
        (h, &rec[H..])
    }

    #[test]
    fn segment_header_round_trip_and_rejections() {
        let h = encode_segment_header(7, 42);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                seq: 7,
                mid_floor: 42
            })
        );
        assert!(decode_segment_header(&h[..39])
            .unwrap_err()
            .contains("shorter"));
        let mut bad = h;
        bad[0] = b'X';
        assert!(decode_segment_header(&bad).unwrap_err().contains("magic"));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad)
            .unwrap_err()
            .contains("checksum"));
    }

    #[test]
    fn message_round_trip() {
        let enc = message(9, b"meta", b"the body").unwrap();
        let (h, p) = split(&enc.bytes);
        assert_eq!((h.kind, h.mid), (Kind::Message, 9));
        assert!(payload_crc_ok(&h, p));
        let Payload::Message { meta, body_start } = decode_payload(&h, p).unwrap() else {
            panic!("not a message");
        };
        assert_eq!(meta, b"meta");
        assert_eq!(&p[body_start as usize..], b"the body");
        assert_eq!(&enc.bytes[enc.body_start as usize..], b"the body");
    }

    #[test]
    fn relocated_round_trip() {
        let ups = vec![b"one".to_vec(), Vec::new(), b"three".to_vec()];
        let enc = relocated(5, b"m", &ups, b"body").unwrap();
        let (h, p) = split(&enc.bytes);
        assert!(payload_crc_ok(&h, p));
        let Payload::Relocated {
            meta,
            updates,
            body_start,
        } = decode_payload(&h, p).unwrap()
        else {
            panic!("not relocated");
        };
        assert_eq!(meta, b"m");
        assert_eq!(updates, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(&p[body_start as usize..], b"body");
        assert_eq!(&enc.bytes[enc.body_start as usize..], b"body");
    }

    #[test]
    fn update_and_finish_round_trip() {
        let u = update(3, b"rcpt 2 delivered").unwrap();
        let (h, p) = split(&u);
        assert_eq!(
            decode_payload(&h, p).unwrap(),
            Payload::Update {
                data: b"rcpt 2 delivered"
            }
        );
        let f = finish(3);
        let (h, p) = split(&f);
        assert_eq!((h.kind, h.mid), (Kind::Finish, 3));
        assert_eq!(decode_payload(&h, p).unwrap(), Payload::Finish);
    }

    #[test]
    fn header_damage_is_detected() {
        let rec = message(1, b"", b"x").unwrap().bytes;
        // Flipping any header bit (including the length) must fail the header checksum or
        // the magic check, never yield a header with a wrong length.
        for byte in 0..H {
            for bit in 0..8 {
                let mut r = rec.clone();
                r[byte] ^= 1 << bit;
                let hb: &[u8; H] = r[..H].try_into().unwrap();
                assert!(decode_record_header(hb).is_err(), "byte {byte} bit {bit}");
            }
        }
        let zeros = [0u8; H];
        assert!(decode_record_header(&zeros).is_err());
    }

    #[test]
    fn inconsistent_payloads_are_rejected() {
        let h = |kind, len| RecordHeader {
            kind,
            len,
            mid: 1,
            payload_crc: 0,
        };
        // Meta length larger than the payload.
        let p = [255u8, 255, 255, 255, 0];
        assert!(decode_payload(&h(Kind::Message, 5), &p).is_err());
        // An absurd update count must not allocate.
        let mut p = vec![0u8, 0, 0, 0];
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_payload(&h(Kind::Relocated, 8), &p)
            .unwrap_err()
            .contains("more than fit"));
        assert!(decode_payload(&h(Kind::Finish, 1), &[0]).is_err());
    }

    #[test]
    fn oversized_payloads_are_refused() {
        assert_eq!(check_len(MAX_PAYLOAD), Ok(u32::MAX));
        assert_eq!(check_len(MAX_PAYLOAD + 1), Err(MAX_PAYLOAD + 1));
    }
}
