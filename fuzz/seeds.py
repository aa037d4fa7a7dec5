#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/TARGET/ from the cases of the table tests.

Run it again after adding cases; scripts/fuzz only reads these files (what a run finds
goes to a temporary corpus). Each file is one input in the target's own format (see the
target's `//!` paragraph: some targets take a first byte or a NUL-separated second part).
"""
import base64
import hashlib
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, items):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    for item in items:
        if isinstance(item, str):
            item = item.encode()
        name = hashlib.sha1(item).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(item)


# pvo_proto::data tests: the smuggling sequences, dot-stuffing, pipelining after the end.
DATA = [
    b"Subject: hi\r\n\r\nbody\r\n.\r\n",
    b"a\r\n..b\r\n.\r\n",
    b"a\n.\nb\r\n.\r\n",
    b"a\r\n.\nb\r\n.\r\n",
    b"a\n.\r\nb\r\n.\r\n",
    b"a\r.\rb\r\n.\r\n",
    b"a\r\n.\rb\r\n.\r\n",
    b"a\r\n\x00.\r\nb\r\n.\r\n",
    b".\r\n",
    b"x\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
    b"bare\rcr\nlf\r\n.\r\n",
]
write("data", [bytes([7]) + d for d in DATA])

# pvo_proto::address tests: routing forms, literals, quoted local parts; "addr\npattern".
ADDRESSES = [
    "user@example.com\nexample.com",
    "user@sub.example.com\n.example.com",
    "User@EXAMPLE.COM.\nexample.com",
    "user%other.example@example.com\nexample.com",
    "a!b@example.com\nexample.com",
    '"a@b"@example.com\nexample.com',
    '"root> NOTIFY=NEVER ORCPT=rfc822;x"@example.com\nexample.com',
    "@relay.example:user@example.com\nexample.com",
    "user@[127.0.0.1]\n[127.0.0.1]",
    "user@[IPv6:::1]\nexample.com",
    "postmaster\npostmaster@",
    "\nexample.com",
    "user@example.com\nuser@",
    "user@example.com\n@example.com",
    "user@-bad-.example\nALL",
    "caf\u00e9@exampl\u00e9.com\nexampl\u00e9.com",
]
write("address", ADDRESSES)

# pvo_proto::line tests; first bytes: max-1 (mod 64), two read splits.
LINES = [
    b"EHLO x\r\nNOOP\r\n",
    b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
    b"NOOP\nNOOP\r\n",
    b"NOOP\rRSET\r\n",
    b"NOOP " + b"a" * 100 + b"MAIL FROM:<smuggled@evil.test>\r\nQUIT\r\n",
    b"abcd\r\n",
]
write("line", [bytes([31, 5, 40]) + l for l in LINES])

# pvo_proto::reply tests; first byte: where the read splits (times 37).
REPLIES = [
    b"220 mx ESMTP\r\n",
    b"250-mx\r\n250-PIPELINING\r\n250-XPVO-META 1\r\n250 SIZE 10\r\n",
    b"250 a\r\n250 b\r\n354 go\r\n",
    b"550-5.1.1 " + b"x" * 200 + b"250 2.1.5 smuggled ok\r\n550 5.1.1 no\r\n",
    b"250\r\n",
    b"25 short\r\n",
    b"250 caf\xff\r\n",
    b"250 2.0.0 Ok: Message 17 accepted\r\n",
]
write("reply", [bytes([3]) + r for r in REPLIES])

# pvo_proto::cpq: whole lines, and bare records (first byte even: META, odd: CONTROL).
TRANSFER = (
    "kind=transfer\ngateway=gw1\nmid=1\ntransfer=gw1-1-1\nreceived=1\nfrom=alice@example.org\n"
    "rcpt=bob@example.com\nquarantine=Policy\nreason=content-filter\nreason-name=quarantine_test\n"
    "threat=0\nexit=\n"
)
DETAILS = base64.b64encode(b'{"evidence":[{"condition":"subject_contains","matched":"x"}]}').decode()
TRANSFER_DETAILS = TRANSFER + "details=" + DETAILS + "\n"
RELEASE = (
    "kind=release\nrelease=mgr-release-1\ngateway=gw1\nmid=23456\nreleased-by=Policy\n"
    "subject-prepend=[released] \nheader-name=X-Released\nheader-value=yes\nstrip-attachments=\n"
)
CONTROL = "action=release\ngateway=gw1\nmid=23456\ntransfer=gw1:23456\n"
READY = "action=ready\ngateway=gw1\nmid=0\ntransfer=ready\n"
cpq = [
    b"XPVO-CONTROL 1 YWN0aW9uPXJlbGVhc2UKZ2F0ZXdheT1ndzEKbWlkPTIzNDU2CnRyYW5zZmVyPWd3MToyMzQ1Ngo=\r\n",
    b"XPVO-META 2 AAAA\r\n",
    b"XPVO-META 1 !!!\r\n",
    b"xpvo-meta 1\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"250 2.0.0 Ok: Message 17 accepted\r\n",
]
for rec in (TRANSFER, TRANSFER_DETAILS, RELEASE):
    cpq.append(b"\x00" + rec.encode())
    cpq.append(b"XPVO-META 1 " + base64.b64encode(rec.encode()) + b"\r\n")
for rec in (CONTROL, READY):
    cpq.append(b"\x01" + rec.encode())
write("cpq", cpq)

# pvo_scan::mime tests: plain, multipart with attachments, nested message, encodings.
ZIPISH = base64.b64encode(b"PK\x03\x04" + b"\x00" * 26 + b"a.exe").decode()
MIME = [
    b"Subject: hi\r\nContent-Type: text/plain\r\n\r\nhello https://login-verify.example/x\r\n",
    (
        "Subject: [quarantine-test] invoice\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "overdue invoice =E2=82=AC\r\n"
        '--b1\r\nContent-Type: application/zip; name="x.zip"\r\nContent-Disposition: attachment; filename="x.zip"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + ZIPISH + "\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
        'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        "--b2\r\nContent-Type: text/html\r\n\r\n<a href=\"http://evil.example/\">x</a>\r\n--b2--\r\n"
        "--b1--\r\n"
    ).encode(),
    b"Subject: =?utf-8?B?w6k=?=\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x\r\n--x--\r\n",
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n",
]
write("mime", MIME)

# pvo_scan::outbreak tests: the rules file, a NUL, a message.
RULES = """version = "2025-06-10.1"

[[rule]]
id = "OUTB-ZIP-INVOICE"
description = "Invoice-themed zip"
threat_level = 3
attachment_type = ["zip"]
body_regex = ["(?i)overdue invoice"]

[[rule]]
id = "OUTB-HASH"
threat_level = 5
sha256 = ["9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"]

[[rule]]
id = "OUTB-PHISH"
threat_level = 2
url_domain = ["login-verify.example"]

[[rule]]
id = "OUTB-EXE-AS-PDF"
threat_level = 4
attachment_type = ["executable"]
attachment_name = ["*.pdf"]
"""
write("outbreak", [RULES, RULES.encode() + b"\x00" + MIME[1], 'version = "1"\n', 'version = "1"\n[[rule]]\nid = "x"\nthreat_level = 9\n'])

# pvo_scan filter and DLP configuration (the tables of the filter and dlp tests).
FILTER = r'''
[[filter]]
name = "quarantine_test"
conditions = { subject_contains = "[quarantine-test]" }
actions = [{ quarantine = "Policy" }]

[[filter]]
name = "exe_attachments"
conditions = { any = [
    { attachment_type = ["exe", "msi"] },
    { all = [ { attachment_name = "*.scr" }, { not = { sender_glob = "*@partner.example" } } ] },
    { header = { name = "X-Mailer", regex = "(?i)evilmailer" } },
] }
actions = [
    { quarantine = "Legal" },
    { add_header = { name = "X-PVO-Filter", value = "exe" } },
    { modify_header = { name = "Subject", value = "[SUSPECT]" } },
    { strip_attachment = { glob = "*.exe" } },
    { strip_attachment = { file_type = "executable" } },
    { notify = "security@example.com" },
    "bounce",
]
'''
DLP = r'''
[[dlp]]
name = "pci"
detectors = ["payment_card", "iban", "us_ssn",
             { dictionary = { name = "projects", words = ["Project Falcon"] } },
             { regex = { name = "employee_id", pattern = "EMP-\\d{6}" } }]
thresholds = { low = 1, medium = 2, high = 3, critical = 4 }
actions = { high = [{ quarantine = "Policy" }], critical = ["drop"] }
'''
LIMITS = "[limits]\nmax_depth = 2\nmax_parts = 3\nmax_header_lines = 4\n"
write("scan_config", [FILTER, DLP, LIMITS, FILTER + DLP + LIMITS])

# pvo_cluster: a join token (member gw1.example.com:22) and layer documents from its tests.
TOKEN = "pvojoin1.Z3cxLmV4YW1wbGUuY29tOjIy." + "B" * 42 + "w." + "C" * 42 + "Q"
LAYER = '''[node]
hostname = "gw1"

[[interface]]
name = "Data 1"
address = "10.0.0.1"

# Slow relays in the east.
[delivery]
max_concurrency = 50

[[listener]]
name = "in"
[[listener.hat]]
sender = "a"
[[listener]]
name = "out"
'''
# "=={\r.": toml_edit 0.23.10 alone panics on it (LayerDoc::parse checks with toml first).
write("cluster", [TOKEN, LAYER, "[ssh]\nport = 22\n", "a.b = 1\n[a.c]\nd = { e = 1 }\n", "=={\r."])
