#!/usr/bin/env python3
"""Writes a synthetic Postfix mail log for the replay benchmark.

bench/gen-maillog.py LINES CLIENTS > mail.log

The mix resembles a nolisting MX pair: decoy rejects from bots
(postfix/decoy/smtpd, 450 at RCPT), real deliveries (client= lines at the
real smtpd), and the connect/disconnect/cleanup/qmgr noise around them.
CLIENTS distinct bot addresses are spread over 10.0.0.0/8 and 2001:db8::/32.
Deterministic for given arguments.
"""
import random
import sys


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    rng = random.Random(42)
    out = sys.stdout
    t = 0  # seconds since Nov 28 00:00:00
    written = 0
    qid = 0x3F2A1B2C3D

    def stamp() -> str:
        h, rem = divmod(t % 86400, 3600)
        m, s = divmod(rem, 60)
        return f"Nov 28 {h:02d}:{m:02d}:{s:02d}"

    def bot(i: int) -> str:
        if i % 10 == 0:
            return f"2001:db8:{(i >> 16) & 0xffff:x}:{i & 0xffff:x}::1"
        return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"

    buf = []
    while written < lines:
        t += 1 if rng.random() < 0.05 else 0
        r = rng.random()
        if r < 0.35:
            ip = bot(rng.randrange(clients))
            buf.append(
                f"{stamp()} mx1 postfix/decoy/smtpd[{rng.randrange(1000, 9999)}]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
                f"450 4.7.1 <user@example.org>: Recipient address rejected: Service unavailable, try again later; "
                f"from=<spam{rng.randrange(99999)}@bulk.example> to=<user@example.org> proto=ESMTP helo=<[{ip}]>"
            )
        elif r < 0.45:
            qid += 1
            ip = f"198.51.{rng.randrange(100, 102)}.{rng.randrange(1, 255)}"
            buf.append(f"{stamp()} mx2 postfix/smtpd[{rng.randrange(1000, 9999)}]: {qid:X}: client=mail.example.net[{ip}]")
        elif r < 0.65:
            ip = bot(rng.randrange(clients))
            buf.append(f"{stamp()} mx1 postfix/decoy/smtpd[{rng.randrange(1000, 9999)}]: connect from unknown[{ip}]")
        elif r < 0.85:
            ip = bot(rng.randrange(clients))
            buf.append(
                f"{stamp()} mx1 postfix/decoy/smtpd[{rng.randrange(1000, 9999)}]: disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4"
            )
        else:
            buf.append(f"{stamp()} mx2 postfix/qmgr[812]: {qid:X}: from=<a@b.example>, size={rng.randrange(900, 90000)}, nrcpt=1 (queue active)")
        written += 1
        if len(buf) >= 10000:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")


if __name__ == "__main__":
    main()
