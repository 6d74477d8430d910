#!/usr/bin/python3
"""Writes the golden DNS queries (CASE.query, hex) with what each must get.
The answers (CASE.answer) are written by the runner with
DDPORT_GOLDEN_UPDATE=1 and checked by hand against the expectation in each
query's header before they are committed."""

import os
import struct
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration"))
import dnsmsg  # noqa: E402

q = dnsmsg.build_query
OPT = lambda size=1232, version=0, do=False: b"\0" + struct.pack(  # noqa: E731
    "!HHIH", 41, size, (version << 16) | (0x8000 if do else 0), 0)


def opt_with(options, size=1232):
    return b"\0" + struct.pack("!HHIH", 41, size, 0, len(options)) + options


def cookie(data):
    return struct.pack("!HH", 10, len(data)) + data


def with_ar(msg, extra, n=1):
    ar = struct.unpack("!H", msg[10:12])[0] + n
    return msg[:10] + struct.pack("!H", ar) + msg[12:] + extra


CASES = [
    ("a", "udp", q("demo.ddport.test", "A", qid=1),
     "NOERROR aa; answer demo.ddport.test A 127.0.0.1 (owner a pointer to the question)"),
    ("aaaa-edns", "udp", q("demo.ddport.test", "AAAA", qid=2, edns=4096),
     "NOERROR aa; answer AAAA ::1; OPT with our size 1232"),
    ("wildcard", "udp", q("Any.Wild.ddport.test", "A", qid=3),
     "NOERROR aa; answer owner Any.Wild.ddport.test (case kept) A 127.0.0.1"),
    ("case-0x20", "udp", q("DeMo.DdPoRt.TeSt", "A", qid=4),
     "NOERROR aa; question and answer owner keep DeMo.DdPoRt.TeSt"),
    ("nxdomain", "udp", q("nobody.ddport.test", "A", qid=5),
     "NXDOMAIN aa; authority SOA ddport.test TTL 30 (min of ttl and minimum)"),
    ("disabled", "udp", q("off.ddport.test", "A", qid=6),
     "NXDOMAIN aa: a disabled device does not exist"),
    ("nodata", "udp", q("demo.ddport.test", "MX", qid=7),
     "NOERROR aa, no answer; authority SOA"),
    ("wildcard-parent-nodata", "udp", q("wild.ddport.test", "A", qid=8),
     "NOERROR aa, no answer, SOA: empty non-terminal above a wildcard"),
    ("refused", "udp", q("example.com", "A", qid=9), "REFUSED, not aa, question echoed"),
    ("soa", "udp", q("ddport.test", "SOA", qid=10),
     "NOERROR aa; SOA ns1.ddport.test hostmaster.ddport.test 2024010101 3600 600 604800 30"),
    ("ns-glue", "udp", q("ddport.test", "NS", qid=11),
     "NOERROR aa; NS ns1.ddport.test, ns2.example.net; additional A+AAAA of ns1 only"),
    ("glue-address", "udp", q("ns1.ddport.test", "AAAA", qid=12), "NOERROR aa; AAAA ::1"),
    ("any", "udp", q("demo.ddport.test", "ANY", qid=13),
     "NOERROR aa; A and AAAA (RFC 8482: no more than the address records)"),
    ("any-apex", "udp", q("ddport.test", "ANY", qid=14), "NOERROR aa; just the SOA (RFC 8482)"),
    ("tc-plain-512", "udp", q("host.big.test", "AAAA", qid=15),
     "NOERROR aa tc; question only: 20 AAAA do not fit 512"),
    ("tc-edns-512", "udp", q("host.big.test", "AAAA", qid=16, edns=512),
     "NOERROR aa tc; question and OPT only"),
    ("fits-edns-1232", "udp", q("host.big.test", "AAAA", qid=17, edns=1232),
     "NOERROR aa; 20 AAAA records with OPT (about 600 bytes)"),
    ("tcp-whole", "tcp", q("host.big.test", "AAAA", qid=18),
     "over TCP: NOERROR aa; 20 AAAA, no tc"),
    ("badvers", "udp", with_ar(q("demo.ddport.test", "A", qid=19), OPT(version=1)),
     "BADVERS: rcode 0 in the header, extended rcode 1 in the OPT, version 0"),
    ("do-bit", "udp", with_ar(q("demo.ddport.test", "A", qid=20), OPT(do=True)),
     "NOERROR; OPT echoes DO"),
    ("two-opts", "udp", with_ar(q("demo.ddport.test", "A", qid=21), OPT() + OPT(), 2),
     "FORMERR, no OPT"),
    ("two-questions", "udp",
     struct.pack("!HHHHHH", 22, 0, 2, 0, 0, 0) + dnsmsg.encode_name("a.test") + b"\0\1\0\1"
     + dnsmsg.encode_name("b.test") + b"\0\1\0\1", "FORMERR, the first question echoed"),
    ("truncated-question", "udp", q("demo.ddport.test", "A", qid=23)[:-3],
     "FORMERR without a question"),
    ("notimp-opcode", "udp",
     struct.pack("!HHHHHH", 24, 2 << 11, 1, 0, 0, 0) + dnsmsg.encode_name("ddport.test")
     + b"\0\6\0\1", "NOTIMP, opcode 2 echoed"),
    ("response-ignored", "udp",
     struct.pack("!HHHHHH", 25, 0x8000, 1, 0, 0, 0) + dnsmsg.encode_name("ddport.test")
     + b"\0\6\0\1", "no answer at all (QR set)"),
    ("rd-copied", "udp", q("demo.ddport.test", "A", qid=26, flags=0x0100),
     "NOERROR aa rd, never ra"),
    ("chaos-version", "udp", q("version.bind", "TXT", qid=27, qclass=3),
     "NOERROR aa; CH TXT \"ddport golden\""),
    ("chaos-id-refused", "udp", q("id.server", "TXT", qid=28, qclass=3),
     "REFUSED: identity not configured"),
    ("axfr-unsigned", "tcp", q("ddport.test", "AXFR", qid=29),
     "REFUSED: allow_transfer names only the key xfr"),
    ("axfr-udp", "udp", q("ddport.test", "AXFR", qid=30), "REFUSED (unsigned) over UDP"),
    ("cookie-client", "udp",
     with_ar(q("demo.ddport.test", "A", qid=32), opt_with(cookie(bytes(range(1, 9))))),
     "NOERROR; OPT with COOKIE: the client cookie 0102..08 then a 16-byte server cookie "
     "(version 1, time 1700000000 = 6553f100, SipHash)"),
    ("cookie-with-server", "tcp",
     with_ar(q("demo.ddport.test", "A", qid=33),
             opt_with(cookie(bytes(range(1, 9)) + bytes(16)) + struct.pack("!HH", 65001, 2)
                      + b"xy")),
     "over TCP: NOERROR; a fresh server cookie (the zero one is ignored), "
     "the unknown option 65001 ignored"),
    ("cookie-bad-length", "udp",
     with_ar(q("demo.ddport.test", "A", qid=34), opt_with(cookie(bytes(12)))),
     "FORMERR: a COOKIE of 12 bytes (RFC 7873 5.2.2)"),
    ("option-cut", "udp",
     with_ar(q("demo.ddport.test", "A", qid=35), opt_with(b"\0\x0a\0\x08abc")),
     "FORMERR: an option longer than the OPT data"),
    ("pointer-loop", "udp",
     struct.pack("!HHHHHH", 31, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",
     "FORMERR without a question: a name pointing at itself"),
]


def read_hex(path):
    out = bytearray()
    with open(path) as f:
        for line in f:
            out += bytes.fromhex(line.split("#", 1)[0])
    return bytes(out)


def describe():
    """Prints each case's expectation beside its decoded answer, to check
    answers by eye after regenerating them."""
    for name, transport, _, expect in CASES:
        data = read_hex(os.path.join(HERE, "%s-%s.answer" % (transport, name)))
        print("%s-%s\n  expect: %s" % (transport, name, expect))
        if not data:
            print("  got: nothing")
            continue
        m = dnsmsg.Message(data)
        flags = [f for f in ("aa", "tc", "rd", "ra") if m.flag(f)]
        print("  got: %s %s q=%s" % (m.rcode_name, " ".join(flags), m.question))
        for sec in ("answer", "authority", "additional"):
            for r in getattr(m, sec):
                print("    %s %s %s %d %s" % (sec, r.name, r.type_name, r.ttl,
                                             r.text(data) if r.type != 41 else
                                             "size=%d ttl=%08x options=%s" % (r.rclass, r.ttl, r.rdata.hex())))


def main():
    if sys.argv[1:] == ["--describe"]:
        describe()
        return
    for name, transport, msg, expect in CASES:
        path = os.path.join(HERE, "%s-%s.query" % (transport, name))
        with open(path, "w") as f:
            f.write("# %s\n# expect: %s\n" % (name, expect))
            for i in range(0, len(msg), 16):
                f.write(msg[i:i + 16].hex(" ") + "\n")


if __name__ == "__main__":
    main()
