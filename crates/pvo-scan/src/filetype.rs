//! True file types from content, and a cheap structural look at archives.
//!
//! A filename extension and a declared `Content-Type` are chosen by the sender, so every policy
//! decision about "what kind of file is this" uses [`detect`], which looks only at the bytes:
//! magic numbers, the entry names of zip containers (to tell a `.docx` from a `.jar` from a plain
//! `.zip`) and the directory of OLE compound files (to tell a `.doc` from an `.msi`). Bytes
//! without any known signature are classified as `html`, `txt` or `unknown`.
//!
//! [`inspect_archive`] does not decompress anything. It reads the directory structures an
//! archive format exposes for free (zip central directory and local headers, gzip header and
//! trailer, tar headers) and reports what a scanner cannot vouch for: archives inside the
//! archive, too many entries, entries whose data overlaps (the "overlapping zip" bomb),
//! encryption, and members that declare a size above the limit. Scanning the content of an
//! archive is the anti-virus engine's job; this module only tells the policy when that job is
//! known to be impossible within bounds, so the message can be treated as unscannable.
//!
//! # Security
//!
//! Every input here is attacker-controlled. All offsets read from the data are bounds-checked
//! (`get`, never indexing with untrusted offsets), arithmetic on them is checked or saturating,
//! and every loop is bounded by the input length or by the entry limit, so a malformed or
//! malicious archive costs at most time linear in its size and never panics.

use serde::{Deserialize, Serialize};

/// A file type determined from content.
///
/// The serialized form and [`FileType::name`] are the short names used in rules (`"exe"`,
/// `"zip"`, `"docx"` ...); [`FileType::from_name`] also accepts a few aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A zip archive that is not one of the zip-based document or package formats below.
    Zip,
    /// Word 2007+ document (zip container with `word/`).
    Docx,
    /// Excel 2007+ workbook (zip container with `xl/`).
    Xlsx,
    /// PowerPoint 2007+ presentation (zip container with `ppt/`).
    Pptx,
    /// Java archive (zip container with `META-INF/MANIFEST.MF`).
    Jar,
    /// gzip stream.
    #[serde(rename = "gz")]
    Gzip,
    /// 7-Zip archive.
    #[serde(rename = "7z")]
    SevenZip,
    /// RAR archive (v4 or v5).
    Rar,
    /// bzip2 stream.
    #[serde(rename = "bz2")]
    Bzip2,
    /// xz stream.
    Xz,
    /// POSIX tar archive.
    Tar,
    /// Microsoft cabinet.
    Cab,
    /// ISO 9660 disk image (a common way to smuggle executables past extension filters).
    Iso,
    /// PDF document.
    Pdf,
    /// DOS/Windows executable or DLL (`MZ`).
    Exe,
    /// ELF executable or shared object.
    Elf,
    /// Mach-O executable (thin or fat).
    Macho,
    /// Windows Installer package (OLE compound file with the MSI class id).
    Msi,
    /// Word 97-2003 document (OLE compound file with a `WordDocument` stream).
    Doc,
    /// Excel 97-2003 workbook (OLE compound file with a `Workbook` stream).
    Xls,
    /// PowerPoint 97-2003 presentation (OLE compound file).
    Ppt,
    /// Any other OLE compound file.
    Ole,
    /// Windows shortcut (`.lnk`).
    Lnk,
    /// Rich Text Format.
    Rtf,
    /// PNG image.
    Png,
    /// JPEG image.
    Jpeg,
    /// GIF image.
    Gif,
    /// BMP image.
    Bmp,
    /// TIFF image.
    Tiff,
    /// HTML document.
    Html,
    /// Text: no binary signature, no NUL bytes, valid UTF-8 or mostly printable.
    #[serde(rename = "txt")]
    Text,
    /// Binary data without a known signature.
    Unknown,
}

/// Every file type, in declaration order (for error messages listing what is allowed).
pub const ALL_TYPES: &[FileType] = &[
    FileType::Zip,
    FileType::Docx,
    FileType::Xlsx,
    FileType::Pptx,
    FileType::Jar,
    FileType::Gzip,
    FileType::SevenZip,
    FileType::Rar,
    FileType::Bzip2,
    FileType::Xz,
    FileType::Tar,
    FileType::Cab,
    FileType::Iso,
    FileType::Pdf,
    FileType::Exe,
    FileType::Elf,
    FileType::Macho,
    FileType::Msi,
    FileType::Doc,
    FileType::Xls,
    FileType::Ppt,
    FileType::Ole,
    FileType::Lnk,
    FileType::Rtf,
    FileType::Png,
    FileType::Jpeg,
    FileType::Gif,
    FileType::Bmp,
    FileType::Tiff,
    FileType::Html,
    FileType::Text,
    FileType::Unknown,
];

/// Names of the groups a rule may use instead of single types (see [`FileType::in_group`]).
pub const GROUPS: &[&str] = &["archive", "executable", "document", "image"];

impl FileType {
    /// The short name used in rules and displays.
    pub fn name(self) -> &'static str {
        match self {
            FileType::Zip => "zip",
            FileType::Docx => "docx",
            FileType::Xlsx => "xlsx",
            FileType::Pptx => "pptx",
            FileType::Jar => "jar",
            FileType::Gzip => "gz",
            FileType::SevenZip => "7z",
            FileType::Rar => "rar",
            FileType::Bzip2 => "bz2",
            FileType::Xz => "xz",
            FileType::Tar => "tar",
            FileType::Cab => "cab",
            FileType::Iso => "iso",
            FileType::Pdf => "pdf",
            FileType::Exe => "exe",
            FileType::Elf => "elf",
            FileType::Macho => "macho",
            FileType::Msi => "msi",
            FileType::Doc => "doc",
            FileType::Xls => "xls",
            FileType::Ppt => "ppt",
            FileType::Ole => "ole",
            FileType::Lnk => "lnk",
            FileType::Rtf => "rtf",
            FileType::Png => "png",
            FileType::Jpeg => "jpeg",
            FileType::Gif => "gif",
            FileType::Bmp => "bmp",
            FileType::Tiff => "tiff",
            FileType::Html => "html",
            FileType::Text => "txt",
            FileType::Unknown => "unknown",
        }
    }

    /// Parses a short name, case-insensitively, with the aliases `jpg`, `gzip`, `7zip`,
    /// `bzip2`, `text`, `htm`, `dll`, `tif`.
    pub fn from_name(name: &str) -> Option<FileType> {
        let lower = name.trim().to_ascii_lowercase();
        let alias = match lower.as_str() {
            "jpg" => "jpeg",
            "gzip" => "gz",
            "7zip" => "7z",
            "bzip2" => "bz2",
            "text" => "txt",
            "htm" => "html",
            "dll" => "exe",
            "tif" => "tiff",
            other => other,
        };
        ALL_TYPES.iter().copied().find(|t| t.name() == alias)
    }

    /// Whether this is an archive or compressed container whose members a scanner has to
    /// unpack (document formats that happen to be zip files are not archives here).
    pub fn is_archive(self) -> bool {
        matches!(
            self,
            FileType::Zip
                | FileType::Jar
                | FileType::Gzip
                | FileType::SevenZip
                | FileType::Rar
                | FileType::Bzip2
                | FileType::Xz
                | FileType::Tar
                | FileType::Cab
                | FileType::Iso
        )
    }

    /// Whether this type belongs to a named group: `archive` (see [`FileType::is_archive`]),
    /// `executable` (exe, elf, macho, msi, lnk, jar), `document` (pdf, rtf, office formats,
    /// other OLE files) or `image`.
    pub fn in_group(self, group: &str) -> bool {
        match group {
            "archive" => self.is_archive(),
            "executable" => matches!(
                self,
                FileType::Exe
                    | FileType::Elf
                    | FileType::Macho
                    | FileType::Msi
                    | FileType::Lnk
                    | FileType::Jar
            ),
            "document" => matches!(
                self,
                FileType::Pdf
                    | FileType::Rtf
                    | FileType::Doc
                    | FileType::Xls
                    | FileType::Ppt
                    | FileType::Ole
                    | FileType::Docx
                    | FileType::Xlsx
                    | FileType::Pptx
            ),
            "image" => matches!(
                self,
                FileType::Png | FileType::Jpeg | FileType::Gif | FileType::Bmp | FileType::Tiff
            ),
            _ => false,
        }
    }

    /// Whether the content is text a human reads (so text detectors should see it).
    pub fn is_text(self) -> bool {
        matches!(self, FileType::Text | FileType::Html | FileType::Rtf)
    }

    /// Whether [`inspect_archive`] can read this type's directory structure.
    fn zip_based(self) -> bool {
        matches!(
            self,
            FileType::Zip | FileType::Jar | FileType::Docx | FileType::Xlsx | FileType::Pptx
        )
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of file types as written in a rule: type names and group names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeSet {
    types: Vec<FileType>,
    groups: Vec<&'static str>,
}

impl TypeSet {
    /// Parses a list of type or group names; the error names the first unknown entry.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<TypeSet, String> {
        let mut set = TypeSet::default();
        for name in names {
            let name = name.as_ref();
            if let Some(group) = GROUPS.iter().find(|g| g.eq_ignore_ascii_case(name.trim())) {
                set.groups.push(group);
            } else if let Some(t) = FileType::from_name(name) {
                set.types.push(t);
            } else {
                return Err(format!(
                    "unknown file type {name:?}; allowed: {} or a group ({})",
                    ALL_TYPES
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                    GROUPS.join(", ")
                ));
            }
        }
        Ok(set)
    }

    /// Whether `t` is in the set directly or through a group.
    pub fn contains(&self, t: FileType) -> bool {
        self.types.contains(&t) || self.groups.iter().any(|g| t.in_group(g))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.groups.is_empty()
    }
}

impl std::fmt::Display for TypeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for name in self
            .types
            .iter()
            .map(|t| t.name())
            .chain(self.groups.iter().copied())
        {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            f.write_str(name)?;
        }
        Ok(())
    }
}

fn u16le(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32le(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64le(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            Some(p) => {
                let at = i + p;
                if &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

/// Determines the type of `data` from its content alone.
pub fn detect(data: &[u8]) -> FileType {
    let starts = |m: &[u8]| data.starts_with(m);
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
        return zip_kind(data);
    }
    if starts(b"\x1f\x8b") {
        return FileType::Gzip;
    }
    if starts(b"7z\xbc\xaf\x27\x1c") {
        return FileType::SevenZip;
    }
    if starts(b"Rar!\x1a\x07") {
        return FileType::Rar;
    }
    if starts(b"BZh") && data.get(3).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        return FileType::Bzip2;
    }
    if starts(b"\xfd7zXZ\x00") {
        return FileType::Xz;
    }
    if starts(b"MSCF\x00\x00\x00\x00") {
        return FileType::Cab;
    }
    if starts(b"MZ") {
        return FileType::Exe;
    }
    if starts(b"\x7fELF") {
        return FileType::Elf;
    }
    if starts(b"\xfe\xed\xfa\xce")
        || starts(b"\xfe\xed\xfa\xcf")
        || starts(b"\xce\xfa\xed\xfe")
        || starts(b"\xcf\xfa\xed\xfe")
    {
        return FileType::Macho;
    }
    // 0xCAFEBABE is both a Mach-O fat binary and a Java class file; a fat binary has a small
    // architecture count where a class file has its version number.
    if starts(b"\xca\xfe\xba\xbe")
        && data
            .get(4..8)
            .is_some_and(|c| c[..3] == [0, 0, 0] && c[3] < 20)
    {
        return FileType::Macho;
    }
    if starts(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        return ole_kind(data);
    }
    if starts(b"L\x00\x00\x00\x01\x14\x02\x00") {
        return FileType::Lnk;
    }
    if starts(b"{\\rtf") {
        return FileType::Rtf;
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return FileType::Png;
    }
    if starts(b"\xff\xd8\xff") {
        return FileType::Jpeg;
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return FileType::Gif;
    }
    if starts(b"II*\x00") || starts(b"MM\x00*") {
        return FileType::Tiff;
    }
    if starts(b"BM") && u32le(data, 14).is_some_and(|h| [12, 40, 52, 56, 108, 124].contains(&h)) {
        return FileType::Bmp;
    }
    if data.get(257..262) == Some(b"ustar") {
        return FileType::Tar;
    }
    if data.get(0x8001..0x8006) == Some(b"CD001") {
        return FileType::Iso;
    }
    // Readers accept "%PDF-" anywhere in the first kilobyte, so a detector must too.
    if find(&data[..data.len().min(1024)], b"%PDF-").is_some() {
        return FileType::Pdf;
    }
    text_kind(data)
}

fn text_kind(data: &[u8]) -> FileType {
    let sample = &data[..data.len().min(4096)];
    if sample.contains(&0) {
        return FileType::Unknown;
    }
    let utf8_ok = match std::str::from_utf8(sample) {
        Ok(_) => true,
        // A sample cut in the middle of a character is still text.
        Err(e) => e.error_len().is_none(),
    };
    if !utf8_ok {
        let printable = sample
            .iter()
            .filter(|&&b| b >= 0x20 || b == b'\n' || b == b'\r' || b == b'\t' || b == 0x0c)
            .count();
        if printable * 100 < sample.len() * 95 {
            return FileType::Unknown;
        }
    }
    let mut start = sample.strip_prefix(b"\xef\xbb\xbf").unwrap_or(sample);
    while let Some((first, rest)) = start.split_first() {
        if first.is_ascii_whitespace() {
            start = rest;
        } else {
            break;
        }
    }
    let head: Vec<u8> = start
        .iter()
        .take(16)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    for tag in [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<script",
        b"<iframe",
        b"<svg",
    ] {
        if head.starts_with(tag) {
            return FileType::Html;
        }
    }
    FileType::Text
}

/// Tells zip-based formats apart by their entry names.
fn zip_kind(data: &[u8]) -> FileType {
    let mut kind = FileType::Zip;
    let mut seen = 0;
    let mut classify = |name: &[u8]| -> bool {
        seen += 1;
        if name.starts_with(b"word/") {
            kind = FileType::Docx;
        } else if name.starts_with(b"xl/") {
            kind = FileType::Xlsx;
        } else if name.starts_with(b"ppt/") {
            kind = FileType::Pptx;
        } else if name.eq_ignore_ascii_case(b"META-INF/MANIFEST.MF") {
            kind = FileType::Jar;
        }
        // Stop at the first decisive name, or after enough entries to have seen one.
        kind == FileType::Zip && seen < 64
    };
    if let Some(eocd) = find_eocd(data) {
        let mut at = eocd.cd_offset;
        for _ in 0..eocd.entries.min(64) {
            let Some(entry) = CentralEntry::parse(data, at) else {
                break;
            };
            if !classify(entry.name) {
                return kind;
            }
            at = entry.next;
        }
    } else {
        let mut at = 0;
        while let Some(found) = find(&data[at..], b"PK\x03\x04") {
            let header = at + found;
            let len = u16le(data, header + 26).unwrap_or(0) as usize;
            let name = data.get(header + 30..header + 30 + len).unwrap_or(b"");
            if !classify(name) {
                return kind;
            }
            at = header + 4;
        }
    }
    kind
}

/// Tells OLE compound files apart by the root class id and the stream names in the first
/// directory sector.
fn ole_kind(data: &[u8]) -> FileType {
    const MSI_CLSID: [u8; 16] = [
        0x84, 0x10, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x46,
    ];
    let Some(shift) = u16le(data, 0x1e) else {
        return FileType::Ole;
    };
    if !(7..=16).contains(&shift) {
        return FileType::Ole;
    }
    let sector = 1usize << shift;
    let Some(first_dir) = u32le(data, 0x30) else {
        return FileType::Ole;
    };
    let Some(dir) = (first_dir as usize)
        .checked_add(1)
        .and_then(|s| s.checked_mul(sector))
    else {
        return FileType::Ole;
    };
    if data.get(dir + 0x50..dir + 0x60) == Some(&MSI_CLSID[..]) {
        return FileType::Msi;
    }
    for i in 0..sector / 128 {
        let entry = dir + i * 128;
        let Some(len) = u16le(data, entry + 0x40) else {
            break;
        };
        let len = (len as usize).min(64);
        let Some(raw) = data.get(entry..entry + len) else {
            break;
        };
        let name: String = char::decode_utf16(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0),
        )
        .map(|c| c.unwrap_or('\u{fffd}'))
        .collect();
        match name.as_str() {
            "WordDocument" => return FileType::Doc,
            "Workbook" | "Book" => return FileType::Xls,
            "PowerPoint Document" => return FileType::Ppt,
            _ => {}
        }
    }
    FileType::Ole
}

/// What [`inspect_archive`] found in an archive's directory structures.
///
/// `problem()` names the first reason the archive cannot be scanned within bounds; the
/// pipeline should treat such an attachment as unscannable, never as clean.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// Whether the format's directory was read at all (7z, rar, bz2, xz, cab and iso are
    /// only recognised, their members are left to the anti-virus engine).
    pub inspected: bool,
    /// Number of entries: the largest of the counts the archive declares and the entries
    /// actually found.
    pub entries: u64,
    /// An entry is itself an archive (by name or by the magic of stored data).
    pub nested_archive: bool,
    /// More entries than the limit.
    pub too_many_entries: bool,
    /// Entries whose data ranges overlap, or directory entries that do not point at a local
    /// header: the structure of zip bombs that reuse one compressed stream many times.
    pub overlapping_entries: bool,
    /// At least one entry is encrypted.
    pub encrypted: bool,
    /// At least one member declares an uncompressed size above the limit.
    pub member_too_large: bool,
    /// Sum of the declared uncompressed sizes (saturating), where the format declares them.
    pub declared_size: u64,
}

impl ArchiveInfo {
    /// The first reason this archive is unscannable within bounds, if any.
    pub fn problem(&self) -> Option<&'static str> {
        if self.nested_archive {
            Some("nested archive")
        } else if self.too_many_entries {
            Some("too many archive entries")
        } else if self.overlapping_entries {
            Some("overlapping archive entries")
        } else if self.encrypted {
            Some("encrypted archive")
        } else if self.member_too_large {
            Some("archive member too large")
        } else {
            None
        }
    }
}

/// File name extensions that mark an entry as an archive in its own right.
const ARCHIVE_EXTENSIONS: &[&str] = &[
    ".zip", ".7z", ".rar", ".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".tar", ".cab",
    ".jar", ".arj", ".lzh", ".lha", ".z", ".zst", ".iso", ".img",
];

fn is_archive_name(name: &[u8]) -> bool {
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let name = name.trim_end_matches(['/', ' ', '.']);
    ARCHIVE_EXTENSIONS.iter().any(|ext| name.ends_with(ext))
}

fn is_archive_magic(data: &[u8]) -> bool {
    data.starts_with(b"PK\x03\x04")
        || data.starts_with(b"\x1f\x8b")
        || data.starts_with(b"7z\xbc\xaf\x27\x1c")
        || data.starts_with(b"Rar!\x1a\x07")
        || data.starts_with(b"MSCF\x00\x00\x00\x00")
        || data.starts_with(b"\xfd7zXZ\x00")
}

/// Reads the directory structure of an archive of type `kind` (as returned by [`detect`]).
///
/// Returns `None` for types that are neither archives nor zip-based documents. Entry
/// counting stops after `max_entries + 1` directory entries, so a huge directory costs no
/// more than the limit.
pub fn inspect_archive(
    data: &[u8],
    kind: FileType,
    max_entries: u64,
    max_member_bytes: u64,
) -> Option<ArchiveInfo> {
    let mut info = if kind.zip_based() {
        inspect_zip(data, max_entries, max_member_bytes)
    } else if kind == FileType::Gzip {
        inspect_gzip(data, max_member_bytes)
    } else if kind == FileType::Tar {
        inspect_tar(data, max_entries, max_member_bytes)
    } else if kind.is_archive() {
        ArchiveInfo::default()
    } else {
        return None;
    };
    info.too_many_entries |= info.entries > max_entries;
    Some(info)
}

struct Eocd {
    entries: u64,
    cd_offset: usize,
}

fn find_eocd(data: &[u8]) -> Option<Eocd> {
    // The end record is 22 bytes plus a comment of at most 65,535 bytes.
    let start = data.len().saturating_sub(22 + 65_535);
    let tail = data.get(start..data.len().checked_sub(22)? + 4)?;
    let rel = tail.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let at = start + rel;
    let mut entries = u64::from(u16le(data, at + 10)?);
    let mut cd_offset = u64::from(u32le(data, at + 16)?);
    if entries == 0xffff || cd_offset == 0xffff_ffff {
        // Zip64: the locator sits just before the end record and points at the zip64 record.
        if let Some(loc) = at.checked_sub(20) {
            if data.get(loc..loc + 4) == Some(b"PK\x06\x07") {
                let rec = u64le(data, loc + 8)? as usize;
                if data.get(rec..rec + 4) == Some(b"PK\x06\x06") {
                    entries = u64le(data, rec + 32)?;
                    cd_offset = u64le(data, rec + 48)?;
                }
            }
        }
    }
    Some(Eocd {
        entries,
        cd_offset: usize::try_from(cd_offset).ok()?,
    })
}

struct CentralEntry<'a> {
    flags: u16,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
    name: &'a [u8],
    next: usize,
}

impl<'a> CentralEntry<'a> {
    fn parse(data: &'a [u8], at: usize) -> Option<CentralEntry<'a>> {
        if data.get(at..at.checked_add(4)?)? != b"PK\x01\x02" {
            return None;
        }
        let flags = u16le(data, at + 8)?;
        let mut compressed = u64::from(u32le(data, at + 20)?);
        let mut uncompressed = u64::from(u32le(data, at + 24)?);
        let name_len = u16le(data, at + 28)? as usize;
        let extra_len = u16le(data, at + 30)? as usize;
        let comment_len = u16le(data, at + 32)? as usize;
        let mut local_offset = u64::from(u32le(data, at + 42)?);
        let name = data.get(at + 46..at + 46 + name_len)?;
        let extra = data
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .unwrap_or(&[]);
        // Zip64 extended information: the 64-bit values appear in this order, each only when
        // the 32-bit field is saturated.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16le(extra, e)?;
            let size = u16le(extra, e + 2)? as usize;
            if id == 0x0001 {
                let mut f = e + 4;
                if uncompressed == 0xffff_ffff {
                    uncompressed = u64le(extra, f).unwrap_or(u64::MAX);
                    f += 8;
                }
                if compressed == 0xffff_ffff {
                    compressed = u64le(extra, f).unwrap_or(u64::MAX);
                    f += 8;
                }
                if local_offset == 0xffff_ffff {
                    local_offset = u64le(extra, f).unwrap_or(u64::MAX);
                }
                break;
            }
            e += 4 + size;
        }
        Some(CentralEntry {
            flags,
            compressed,
            uncompressed,
            local_offset,
            name,
            next: at + 46 + name_len + extra_len + comment_len,
        })
    }
}

fn inspect_zip(data: &[u8], max_entries: u64, max_member: u64) -> ArchiveInfo {
    let mut info = ArchiveInfo {
        inspected: true,
        ..ArchiveInfo::default()
    };
    let cap = max_entries.saturating_add(1);
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut cd_count = 0u64;
    if let Some(eocd) = find_eocd(data) {
        info.entries = eocd.entries;
        let mut at = eocd.cd_offset;
        while cd_count < cap {
            let Some(entry) = CentralEntry::parse(data, at) else {
                break;
            };
            cd_count += 1;
            info.nested_archive |= is_archive_name(entry.name);
            info.encrypted |= entry.flags & 1 != 0;
            info.member_too_large |= entry.uncompressed > max_member;
            info.declared_size = info.declared_size.saturating_add(entry.uncompressed);
            spans.push((entry.local_offset, entry.compressed));
            at = entry.next;
        }
    }
    // Local headers: an entry missing from the central directory is still unpacked by some
    // tools, and a stored member's data shows whether it is itself an archive.
    let mut local_count = 0u64;
    let mut at = 0;
    while local_count < cap {
        let Some(found) = find(&data[at..], b"PK\x03\x04") else {
            break;
        };
        let header = at + found;
        local_count += 1;
        let flags = u16le(data, header + 6).unwrap_or(0);
        let method = u16le(data, header + 8).unwrap_or(0);
        let name_len = u16le(data, header + 26).unwrap_or(0) as usize;
        let extra_len = u16le(data, header + 28).unwrap_or(0) as usize;
        let name = data.get(header + 30..header + 30 + name_len).unwrap_or(b"");
        info.nested_archive |= is_archive_name(name);
        info.encrypted |= flags & 1 != 0;
        if method == 0 {
            let body = header + 30 + name_len + extra_len;
            if let Some(stored) = data.get(body..) {
                info.nested_archive |= is_archive_magic(stored);
            }
        }
        at = header + 4;
    }
    info.entries = info.entries.max(cd_count).max(local_count);
    // Overlap: each entry's local header plus data must end before the next entry begins.
    spans.sort_unstable();
    for (i, &(offset, compressed)) in spans.iter().enumerate() {
        let Ok(off) = usize::try_from(offset) else {
            info.overlapping_entries = true;
            break;
        };
        if data.get(off..off.saturating_add(4)) != Some(b"PK\x03\x04") {
            info.overlapping_entries = true;
            break;
        }
        let name_len = u64::from(u16le(data, off + 26).unwrap_or(0));
        let extra_len = u64::from(u16le(data, off + 28).unwrap_or(0));
        let end = offset
            .saturating_add(30)
            .saturating_add(name_len)
            .saturating_add(extra_len)
            .saturating_add(compressed);
        if let Some(&(next, _)) = spans.get(i + 1) {
            if next == offset || end > next {
                info.overlapping_entries = true;
                break;
            }
        }
    }
    info
}

fn inspect_gzip(data: &[u8], max_member: u64) -> ArchiveInfo {
    let mut info = ArchiveInfo {
        inspected: true,
        entries: 1,
        ..ArchiveInfo::default()
    };
    let flags = data.get(3).copied().unwrap_or(0);
    let mut at = 10usize;
    if flags & 0x04 != 0 {
        at = at.saturating_add(2 + u16le(data, 10).unwrap_or(0) as usize);
    }
    if flags & 0x08 != 0 {
        if let Some(rest) = data.get(at..) {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let name = &rest[..end];
            // A tarball is the normal content of a gzip stream; anything else archive-like
            // inside is a nested archive.
            let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
            info.nested_archive = is_archive_name(name) && !lower.ends_with(".tar");
        }
    }
    if data.len() >= 18 {
        let isize = u64::from(u32le(data, data.len() - 4).unwrap_or(0));
        info.declared_size = isize;
        info.member_too_large = isize > max_member;
    }
    info
}

fn inspect_tar(data: &[u8], max_entries: u64, max_member: u64) -> ArchiveInfo {
    let mut info = ArchiveInfo {
        inspected: true,
        ..ArchiveInfo::default()
    };
    let mut at = 0usize;
    while info.entries <= max_entries {
        let Some(header) = data.get(at..at + 512) else {
            break;
        };
        if header.iter().all(|&b| b == 0) {
            break;
        }
        info.entries += 1;
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        info.nested_archive |= is_archive_name(&header[..name_end]);
        let size = tar_size(&header[124..136]);
        info.member_too_large |= size > max_member;
        info.declared_size = info.declared_size.saturating_add(size);
        if size > 0 {
            if let Some(body) = data.get(at + 512..) {
                info.nested_archive |= is_archive_magic(body);
            }
        }
        let blocks = size.div_ceil(512).saturating_add(1);
        match usize::try_from(blocks.saturating_mul(512))
            .ok()
            .and_then(|n| at.checked_add(n))
        {
            Some(next) => at = next,
            None => break,
        }
    }
    info
}

fn tar_size(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256 encoding for large members.
        return field[1..].iter().fold(0u64, |acc, &b| {
            acc.saturating_mul(256).saturating_add(u64::from(b))
        });
    }
    field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .fold(0u64, |acc, &b| {
            acc.saturating_mul(8).saturating_add(u64::from(b - b'0'))
        })
}

#[cfg(test)]
mod tests;
