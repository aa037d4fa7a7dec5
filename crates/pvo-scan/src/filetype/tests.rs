use super::*;
use crate::testutil::{entry, ole, zip, zip_with, Entry};

const MSI_CLSID: [u8; 16] = [
    0x84, 0x10, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46,
];

fn pe() -> Vec<u8> {
    let mut exe = b"MZ\x90\x00".to_vec();
    exe.resize(0x80, 0);
    exe.extend_from_slice(b"PE\x00\x00");
    exe.resize(512, 0);
    exe
}

#[test]
fn detects_types_by_magic() {
    let mut tar = vec![0u8; 1024];
    tar[..8].copy_from_slice(b"file.txt");
    tar[124..135].copy_from_slice(b"00000000005");
    tar[257..262].copy_from_slice(b"ustar");
    let mut iso = vec![0u8; 0x8010];
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    let mut bmp = b"BM".to_vec();
    bmp.resize(14, 0);
    bmp.extend_from_slice(&40u32.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, FileType)> = vec![
        ("pe", pe(), FileType::Exe),
        ("zip", zip(&[("a.txt", b"hello")]), FileType::Zip),
        ("empty zip", b"PK\x05\x06".to_vec(), FileType::Zip),
        (
            "docx",
            zip(&[
                ("[Content_Types].xml", b"<x/>"),
                ("word/document.xml", b"<w/>"),
            ]),
            FileType::Docx,
        ),
        ("xlsx", zip(&[("xl/workbook.xml", b"<x/>")]), FileType::Xlsx),
        (
            "pptx",
            zip(&[("ppt/presentation.xml", b"<p/>")]),
            FileType::Pptx,
        ),
        (
            "jar",
            zip(&[("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0")]),
            FileType::Jar,
        ),
        (
            "gzip",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03".to_vec(),
            FileType::Gzip,
        ),
        (
            "7z",
            b"7z\xbc\xaf\x27\x1c\x00\x04".to_vec(),
            FileType::SevenZip,
        ),
        ("rar4", b"Rar!\x1a\x07\x00".to_vec(), FileType::Rar),
        ("rar5", b"Rar!\x1a\x07\x01\x00".to_vec(), FileType::Rar),
        ("bzip2", b"BZh91AY&SY".to_vec(), FileType::Bzip2),
        ("not bzip2", b"BZhello".to_vec(), FileType::Text),
        ("xz", b"\xfd7zXZ\x00\x00".to_vec(), FileType::Xz),
        ("cab", b"MSCF\x00\x00\x00\x00".to_vec(), FileType::Cab),
        (
            "pdf",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec(),
            FileType::Pdf,
        ),
        (
            "pdf with junk before",
            b"junk junk\n%PDF-1.4\n".to_vec(),
            FileType::Pdf,
        ),
        ("elf", b"\x7fELF\x02\x01\x01".to_vec(), FileType::Elf),
        (
            "macho",
            b"\xcf\xfa\xed\xfe\x07\x00\x00\x01".to_vec(),
            FileType::Macho,
        ),
        (
            "fat macho",
            b"\xca\xfe\xba\xbe\x00\x00\x00\x02".to_vec(),
            FileType::Macho,
        ),
        (
            "java class",
            b"\xca\xfe\xba\xbe\x00\x00\x00\x34".to_vec(),
            FileType::Unknown,
        ),
        (
            "doc",
            ole(&["WordDocument", "1Table"], [0; 16]),
            FileType::Doc,
        ),
        ("xls", ole(&["Workbook"], [0; 16]), FileType::Xls),
        ("ppt", ole(&["PowerPoint Document"], [0; 16]), FileType::Ppt),
        ("msi", ole(&["whatever"], MSI_CLSID), FileType::Msi),
        ("ole", ole(&["Other"], [0; 16]), FileType::Ole),
        (
            "truncated ole",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1".to_vec(),
            FileType::Ole,
        ),
        (
            "lnk",
            b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00".to_vec(),
            FileType::Lnk,
        ),
        ("rtf", b"{\\rtf1\\ansi hello}".to_vec(), FileType::Rtf),
        ("png", b"\x89PNG\r\n\x1a\n\x00\x00".to_vec(), FileType::Png),
        (
            "jpeg",
            b"\xff\xd8\xff\xe0\x00\x10JFIF".to_vec(),
            FileType::Jpeg,
        ),
        ("gif", b"GIF89a\x01\x00".to_vec(), FileType::Gif),
        ("tiff", b"II*\x00\x08\x00".to_vec(), FileType::Tiff),
        ("bmp", bmp, FileType::Bmp),
        ("tar", tar, FileType::Tar),
        ("iso", iso, FileType::Iso),
        (
            "html",
            b"  <!DOCTYPE html><html><body>x</body></html>".to_vec(),
            FileType::Html,
        ),
        (
            "html with bom",
            b"\xef\xbb\xbf<HTML>".to_vec(),
            FileType::Html,
        ),
        (
            "text",
            b"Dear Bob,\r\nthe invoice is attached.\r\n".to_vec(),
            FileType::Text,
        ),
        (
            "latin1 text",
            b"Gr\xfc\xdfe aus K\xf6ln".to_vec(),
            FileType::Text,
        ),
        ("empty", Vec::new(), FileType::Text),
        (
            "binary",
            vec![0x00, 0x01, 0x02, 0xff, 0x10],
            FileType::Unknown,
        ),
    ];
    for (label, data, want) in cases {
        assert_eq!(detect(&data), want, "{label}");
    }
}

#[test]
fn names_and_groups() {
    for t in ALL_TYPES {
        assert_eq!(FileType::from_name(t.name()), Some(*t));
    }
    assert_eq!(FileType::from_name("JPG"), Some(FileType::Jpeg));
    assert_eq!(FileType::from_name("dll"), Some(FileType::Exe));
    assert_eq!(FileType::from_name("nope"), None);
    assert!(FileType::Zip.is_archive());
    assert!(!FileType::Docx.is_archive());
    assert!(FileType::Msi.in_group("executable"));
    assert!(FileType::Doc.in_group("document"));
    let set = TypeSet::parse(&["exe", "archive"]).unwrap();
    assert!(set.contains(FileType::Exe));
    assert!(set.contains(FileType::SevenZip));
    assert!(!set.contains(FileType::Pdf));
    let err = TypeSet::parse(&["exe", "exx"]).unwrap_err();
    assert!(err.contains("\"exx\"") && err.contains("allowed"), "{err}");
}

fn inspect(data: &[u8]) -> ArchiveInfo {
    inspect_archive(data, detect(data), 10_000, 100 << 20).unwrap()
}

#[test]
fn plain_zip_is_fine() {
    let info = inspect(&zip(&[("a.txt", b"hello"), ("b.pdf", b"%PDF-1.4")]));
    assert!(info.inspected);
    assert_eq!(info.entries, 2);
    assert_eq!(info.problem(), None, "{info:?}");
    assert_eq!(info.declared_size, 13);
}

#[test]
fn archive_problems() {
    let inner = zip(&[("eicar.com", b"X5O!P%@AP")]);
    let mut many = Vec::new();
    let names: Vec<String> = (0..20_000).map(|i| format!("f{i}.txt")).collect();
    for name in &names {
        many.push(entry(name, b"x"));
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "nested by name",
            zip(&[("inner.ZIP", b"not really")]),
            "nested archive",
        ),
        (
            "nested 7z by name",
            zip(&[("a/b.7z", b"x")]),
            "nested archive",
        ),
        (
            "nested by stored magic",
            zip(&[("inner.dat", &inner)]),
            "nested archive",
        ),
        (
            "20,000 entries",
            zip_with(&many, 0),
            "too many archive entries",
        ),
        (
            "overlapping entries",
            zip_with(&[entry("a.txt", b"payload")], 3),
            "overlapping archive entries",
        ),
        (
            "encrypted",
            zip_with(
                &[Entry {
                    flags: 1,
                    ..entry("secret.doc", b"xx")
                }],
                0,
            ),
            "encrypted archive",
        ),
        (
            "200 MiB member",
            zip_with(
                &[Entry {
                    declared_size: Some(200 << 20),
                    ..entry("zeros.bin", b"tiny")
                }],
                0,
            ),
            "archive member too large",
        ),
    ];
    for (label, data, want) in cases {
        assert_eq!(inspect(&data).problem(), Some(want), "{label}");
    }
}

#[test]
fn twenty_nested_zips_are_flagged_at_the_first_level() {
    let mut data =
        b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*".to_vec();
    let mut name = "eicar.com".to_string();
    for level in 0..20 {
        data = zip(&[(&name, &data)]);
        name = format!("level{level}.zip");
    }
    let info = inspect(&data);
    assert_eq!(info.problem(), Some("nested archive"));
}

#[test]
fn gzip_and_tar() {
    let mut gz = b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\x03inner.zip\x00".to_vec();
    gz.extend_from_slice(&[0; 8]);
    assert_eq!(inspect(&gz).problem(), Some("nested archive"));

    let mut tgz = b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\x03backup.tar\x00".to_vec();
    tgz.extend_from_slice(&[0; 4]);
    tgz.extend_from_slice(&(300u32 << 20).to_le_bytes());
    let info = inspect(&tgz);
    assert!(!info.nested_archive);
    assert_eq!(info.problem(), Some("archive member too large"));

    let mut tar = vec![0u8; 512 * 3];
    tar[..9].copy_from_slice(b"inner.rar");
    tar[124..135].copy_from_slice(b"00000000005");
    tar[257..262].copy_from_slice(b"ustar");
    let info = inspect(&tar);
    assert_eq!(info.entries, 1);
    assert_eq!(info.problem(), Some("nested archive"));

    assert_eq!(inspect_archive(b"%PDF-1.4", FileType::Pdf, 10, 10), None);
    let seven = inspect(b"7z\xbc\xaf\x27\x1c\x00\x04");
    assert!(!seven.inspected);
    assert_eq!(seven.problem(), None);
}

#[test]
fn malformed_archives_do_not_panic() {
    let good = zip(&[("a.txt", b"hello world"), ("b.zip", b"x")]);
    for cut in 0..good.len() {
        let data = &good[..cut];
        let kind = detect(data);
        let _ = inspect_archive(data, kind, 10, 10);
    }
    let mut flipped = good.clone();
    for i in 0..flipped.len() {
        flipped[i] ^= 0xff;
        let _ = inspect_archive(&flipped, FileType::Zip, 10, 10);
        flipped[i] ^= 0xff;
    }
}
