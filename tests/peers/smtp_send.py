#!/usr/bin/python3
"""Send one message with Python's smtplib, the way an ordinary client would.

    smtp_send.py --server 127.0.0.1 --port PORT [--source 127.0.0.2]
        --from a@example.org --to b@example.com [--to c@example.com]
        [--subject S] [--message-id ID] [--body TEXT] [--size BYTES]

Prints `REFUSED <rcpt> <code> <text>` per recipient refused and `SENT <DATA reply>` on
success (exit 0); on an SMTP error prints `ERROR <code> <text>` and exits 1. Standard library only, so any python3 works.
"""

import argparse
import email.utils
import smtplib
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", help="source address to bind, e.g. 127.0.0.2")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--subject", default="smtplib test")
    p.add_argument("--message-id")
    p.add_argument("--body", default="Sent by tests/peers/smtp_send.py.")
    p.add_argument("--size", type=int, default=0, help="pad the body to about this many bytes")
    args = p.parse_args()
    if not args.server.startswith("127.") or (args.source and not args.source.startswith("127.")):
        sys.exit("smtp_send.py: loopback only")

    body = args.body
    if args.size > len(body):
        line = "x" * 76 + "\r\n"
        body += "\r\n" + line * ((args.size - len(body)) // len(line) + 1)
    msg_id = args.message_id or email.utils.make_msgid(domain="client.test")
    message = (
        f"From: <{args.sender}>\r\n"
        f"To: {', '.join('<' + t + '>' for t in args.to)}\r\n"
        f"Subject: {args.subject}\r\n"
        f"Message-ID: {msg_id}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        "\r\n"
        f"{body}\r\n"
    )
    source = (args.source, 0) if args.source else None
    try:
        # local_hostname: without it smtplib calls getfqdn(), slow without DNS.
        with smtplib.SMTP(args.server, args.port, local_hostname="client.test",
                          source_address=source, timeout=60) as s:
            s.ehlo()
            code, text = s.mail(args.sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, text, args.sender)
            accepted = 0
            for rcpt in args.to:
                code, text = s.rcpt(rcpt)
                if code in (250, 251):
                    accepted += 1
                else:
                    print(f"REFUSED {rcpt} {code} {text.decode(errors='replace')}", flush=True)
            if not accepted:
                print("ERROR no recipient accepted", flush=True)
                sys.exit(1)
            code, text = s.data(message.encode("utf-8"))
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
            print(f"SENT {code} {text.decode(errors='replace')}", flush=True)
    except smtplib.SMTPResponseException as e:
        print(f"ERROR {e.smtp_code} {e.smtp_error.decode(errors='replace')}", flush=True)
        sys.exit(1)

if __name__ == "__main__":
    main()
