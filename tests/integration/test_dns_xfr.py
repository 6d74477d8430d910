#!/usr/bin/python3
"""Zone transfers out of a real `ddport serve`: AXFR and IXFR with dig,
kdig and by hand, the allow_transfer ACL, large zones split over several
messages, TSIG (RFC 8945) on queries and transfers, BADKEY/BADSIG/BADTIME.
Loopback only."""

import base64
import os
import shutil
import struct
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
import dnsmsg  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

MANY = 1500  # devices in many.test: about 50 KB of records
KEYED = 1200  # devices in keyed.test, transferred only with a TSIG key
SECRET = bytes(range(7, 39))  # 32 bytes
SECRET512 = bytes(range(100, 164))


class Env:
    pass


def config_text(env):
    backend = ddtest.free_port()
    extra = "".join("  d%d.many.test: {address: 127.0.0.1, ports: {http: %d}}\n" % (i, backend)
                    for i in range(MANY))
    extra += "".join("  k%d.keyed.test: {address: 127.0.0.1, ports: {http: %d}}\n" % (i, backend)
                     for i in range(KEYED))
    extra += "  gone.ddport.test: {address: 127.0.0.1, ports: {http: %d}, enabled: false}\n" % backend
    text = ddtest.config_text(env.proxy_port, env.dns_port, backend, backend, extra_devices=extra)
    soa = "      soa: {email: hostmaster@ddport.test, refresh: 1h, retry: 10m, expire: 7d, minimum: 60}\n"
    check(soa in text, "test template changed: no SOA line to add allow_transfer after")
    text = text.replace(soa, soa + "      allow_transfer: [127.0.0.0/8]\n", 1)
    zones = ("    - {name: many.test, proxy: [192.0.2.1], allow_transfer: 127.0.0.1}\n"
             "    - {name: closed.test, proxy: [192.0.2.1]}\n"
             "    - {name: elsewhere.test, proxy: [192.0.2.1], allow_transfer: [192.0.2.0/24]}\n"
             "    - {name: keyed.test, proxy: [\"2001:db8::1\"], allow_transfer: [xfr, big]}\n"
             "  tsig_keys:\n"
             "    xfr: {algorithm: hmac-sha256, secret: %s}\n"
             "    big: {algorithm: hmac-sha512, secret: %s}\n"
             % (base64.b64encode(SECRET).decode(), base64.b64encode(SECRET512).decode()))
    return text.replace("devices:\n", zones + "devices:\n", 1)


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.proxy_port = ddtest.free_port()
    env.dns_port = ddtest.free_port()
    path = ddtest.write_file(env.dir, "ddport.yaml", config_text(env))
    env.ddport = ddtest.Ddport(path, env.dir, tcp_ports=[env.proxy_port, env.dns_port],
                               udp_ports=[env.dns_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        if env.ddport.running():
            env.ddport.stop()
    finally:
        env.tmp.cleanup()


def transfer(env, zone, qtype="AXFR", authority=b"", nscount=0, sock=None, qid=0x4242,
             sign=None):
    """[Message] of one transfer over TCP, read until the closing SOA.
    sign: a function that signs the query."""
    own = sock is None
    s = sock or dnsmsg.tcp_connect(env.dns_port)
    try:
        q = dnsmsg.build_query(zone, qtype, qid=qid, authority=authority, nscount=nscount)
        if sign is not None:
            q = sign(q)
        s.sendall(dnsmsg.frame(q))
        msgs = []
        n_soa = 0
        for _ in range(1000):
            m = dnsmsg.Message(dnsmsg.recv_frame(s))
            msgs.append(m)
            if m.rcode != 0:
                break
            n_soa += sum(1 for r in m.answer if r.type == 6)
            if n_soa >= 2 or (len(msgs) == 1 and len(m.answer) == 1 and n_soa == 1):
                break
        return msgs
    finally:
        if own:
            s.close()


def records(msgs):
    out = []
    for m in msgs:
        out += [(r.name.lower(), r.type_name, r.text(m.data)) for r in m.answer]
    return out


def t_dig_axfr(env):
    proc = ddtest.run([ddtest.DIG, "@127.0.0.1", "-p", str(env.dns_port), "+tries=1", "+time=5",
                       "ddport.test", "AXFR"], timeout=30)
    check_eq(proc.returncode, 0, "dig AXFR exit status")
    lines = [line.split() for line in proc.stdout.splitlines() if line and not line.startswith(";")]
    got = [(f[0].lower(), f[3], " ".join(f[4:])) for f in lines]
    check(len(got) >= 2 and got[0][1] == "SOA" and got[-1][1] == "SOA",
          "AXFR does not start and end with the SOA: %s" % got)
    check_eq(got[0], got[-1], "opening and closing SOA")
    check_eq(sorted(got[1:-1]), sorted([
        ("ddport.test.", "NS", "ns1.ddport.test."),
        ("ns1.ddport.test.", "A", "127.0.0.1"),
        ("demo.ddport.test.", "A", "127.0.0.1"),
        ("demo.ddport.test.", "AAAA", "::1"),
        ("*.wild.ddport.test.", "A", "127.0.0.1"),
        ("*.wild.ddport.test.", "AAAA", "::1"),
        # off.ddport.test is enabled in this config; gone.ddport.test is not
        ("off.ddport.test.", "A", "127.0.0.1"),
        ("off.ddport.test.", "AAAA", "::1"),
    ]), "AXFR records between the SOAs")
    soa = got[0][2].split()
    res = ddtest.dig(env.dns_port, "ddport.test", "SOA")
    check_eq(res.records("answer", "SOA")[0][4], soa, "SOA in AXFR vs SOA query")


def t_kdig_axfr(env):
    kdig = shutil.which("kdig")
    if not kdig:
        raise ddtest.Skip("kdig not installed (package knot-dnsutils)")
    proc = ddtest.run([kdig, "@127.0.0.1", "-p", str(env.dns_port), "+timeout=5", "+retry=0",
                       "ddport.test", "AXFR"], timeout=30)
    check_eq(proc.returncode, 0, "kdig AXFR exit status: " + proc.stderr[-300:])
    check("Received" in proc.stdout and "10 records" in proc.stdout,
          "kdig AXFR summary: %s" % proc.stdout[-300:])


def t_big_zone_split(env):
    msgs = transfer(env, "many.test")
    check(len(msgs) > 1, "a %d-device zone came in %d message" % (MANY, len(msgs)))
    check_eq([len(m.question) for m in msgs], [1] + [0] * (len(msgs) - 1),
             "question count per message (first only)")
    for m in msgs:
        check(m.flag("aa") and m.flag("qr") and m.rcode == 0, "flags of a transfer message")
        check_eq(m.id, 0x4242, "id of every transfer message")
        check(len(m.data) <= 65535, "message of %d bytes" % len(m.data))
    recs = records(msgs)
    check_eq(recs[0][1], "SOA", "first record")
    check_eq(recs[-1], recs[0], "last record is the opening SOA")
    names = sorted(r[0] for r in recs[1:-1])
    check_eq(names, sorted("d%d.many.test." % i for i in range(MANY)), "device names in many.test")
    check(all(r[2] == "192.0.2.1" for r in recs[1:-1]), "addresses in many.test")
    # dig agrees on the count.
    proc = ddtest.run([ddtest.DIG, "@127.0.0.1", "-p", str(env.dns_port), "+tries=1", "+time=5",
                       "many.test", "AXFR"], timeout=30)
    check("XFR size: %d records (messages %d," % (MANY + 2, len(msgs)) in proc.stdout,
          "dig's XFR summary: %s" % proc.stdout[-200:])


def soa_authority(zone, serial):
    rdata = (dnsmsg.encode_name("ns1." + zone) + dnsmsg.encode_name("hostmaster." + zone)
             + struct.pack("!5I", serial, 0, 0, 0, 0))
    return dnsmsg.encode_name(zone) + struct.pack("!HHIH", 6, 1, 0, len(rdata)) + rdata


def t_ixfr(env):
    axfr = records(transfer(env, "ddport.test"))
    serial = int(axfr[0][2].split()[2])
    # An older version: the whole zone, AXFR-style (RFC 1995 4).
    old = transfer(env, "ddport.test", "IXFR", soa_authority("ddport.test", serial - 10), 1)
    check_eq(sorted(records(old)), sorted(axfr), "IXFR from an older serial")
    check_eq(old[0].question[0][1], 251, "question type echoed as IXFR")
    # The current version: just the SOA.
    cur = transfer(env, "ddport.test", "IXFR", soa_authority("ddport.test", serial), 1)
    check_eq(records(cur), [axfr[0]], "IXFR from the current serial")


def t_pipelined_after_axfr(env):
    with dnsmsg.tcp_connect(env.dns_port) as s:
        # The query after the transfer is sent at once but must be answered
        # after the transfer's last message.
        s.sendall(dnsmsg.frame(dnsmsg.build_query("many.test", "AXFR", qid=1))
                  + dnsmsg.frame(dnsmsg.build_query("demo.ddport.test", "A", qid=2)))
        ids = []
        for _ in range(100):
            m = dnsmsg.Message(dnsmsg.recv_frame(s))
            ids.append(m.id)
            if m.id == 2:
                check_eq([r.text(m.data) for r in m.answer], ["127.0.0.1"], "answer after AXFR")
                break
        check(len(ids) > 2 and set(ids[:-1]) == {1} and ids[-1] == 2,
              "answers out of order: %s" % ids)


def t_refused(env):
    for zone, what in (("closed.test", "empty allow_transfer"),
                       ("elsewhere.test", "client outside the prefixes")):
        msgs = transfer(env, zone)
        check_eq((len(msgs), msgs[0].rcode_name), (1, "REFUSED"), "AXFR of " + zone)
        check_eq(msgs[0].answer, [], what + ": records in a refusal")
    check("AXFR of closed.test from 127.0.0.1" in env.ddport.stderr_text(),
          "refusal not logged: %s" % env.ddport.stderr_tail())
    m = transfer(env, "demo.ddport.test")[0]
    check_eq(m.rcode_name, "NOTAUTH", "AXFR of a name below an apex")
    m = transfer(env, "example.com")[0]
    check_eq(m.rcode_name, "REFUSED", "AXFR outside our zones")
    res = ddtest.dig(env.dns_port, "closed.test", "AXFR")
    check("Transfer failed" in res.text, "dig AXFR of closed.test: %s" % res.text[-200:])


def t_udp(env):
    m = dnsmsg.Message(dnsmsg.udp_exchange(env.dns_port, dnsmsg.build_query("ddport.test", "AXFR")))
    check_eq(m.rcode_name, "NOTIMP", "AXFR over UDP")
    m = dnsmsg.Message(dnsmsg.udp_exchange(env.dns_port, dnsmsg.build_query("closed.test", "AXFR")))
    check_eq(m.rcode_name, "REFUSED", "AXFR over UDP of a closed zone")


def signer(name="xfr", alg="hmac-sha256", secret=SECRET, **kw):
    return lambda q: dnsmsg.sign(q, name, alg, secret, **kw)


def t_tsig_axfr(env):
    # dig checks the MAC of every message of a multi-message transfer.
    key = "hmac-sha256:xfr:" + base64.b64encode(SECRET).decode()
    proc = ddtest.run([ddtest.DIG, "@127.0.0.1", "-p", str(env.dns_port), "+tries=1", "+time=5",
                       "-y", key, "keyed.test", "AXFR"], timeout=30)
    out = proc.stdout + proc.stderr
    check("XFR size: %d records (messages " % (KEYED + 2) in out, "dig -y AXFR: %s" % out[-300:])
    check_eq(proc.returncode, 0, "dig -y AXFR exit status")
    check("failure" not in out and "could not be validated" not in out,
          "dig reports a TSIG problem: %s" % out[-300:])
    # By hand: each message signed, chained to the one before (RFC 8945 5.3.1).
    q = dnsmsg.sign(dnsmsg.build_query("keyed.test", "AXFR", qid=77), "xfr", "hmac-sha256", SECRET)
    with dnsmsg.tcp_connect(env.dns_port) as s:
        s.sendall(dnsmsg.frame(q))
        prior = dnsmsg.Message(q).tsig().mac
        n_soa = n_msgs = 0
        for i in range(100):
            data = dnsmsg.recv_frame(s)
            m = dnsmsg.Message(data)
            check(m.tsig() is not None, "transfer message %d unsigned" % i)
            check(dnsmsg.verify(data, SECRET, "hmac-sha256", prior, timers_only=i > 0),
                  "MAC of transfer message %d" % i)
            prior = m.tsig().mac
            n_msgs += 1
            n_soa += sum(1 for r in m.answer if r.type == 6)
            if n_soa == 2:
                break
        check(n_msgs > 1, "keyed.test came in one message")
    # Unsigned, the client's address alone is not enough.
    check_eq(transfer(env, "keyed.test")[0].rcode_name, "REFUSED", "unsigned AXFR of keyed.test")
    # The SHA-512 key is listed too.
    msgs = transfer(env, "keyed.test", sign=signer("big", "hmac-sha512", SECRET512))
    check_eq(len(records(msgs)), KEYED + 2, "records with the hmac-sha512 key")
    check(dnsmsg.verify(msgs[0].data, SECRET512, "hmac-sha512", None) is False,
          "MAC verified without the request MAC (digest ignores it?)")


def t_tsig_query(env):
    q = dnsmsg.sign(dnsmsg.build_query("demo.ddport.test", "A", qid=5, edns=1232),
                    "big", "hmac-sha512", SECRET512)
    data = dnsmsg.udp_exchange(env.dns_port, q)
    m = dnsmsg.Message(data)
    check_eq((m.rcode_name, [r.text(data) for r in m.answer]), ("NOERROR", ["127.0.0.1"]),
             "signed query")
    check(m.additional[-1].type == 250 and m.additional[0].type == 41, "OPT then TSIG in answer")
    check(dnsmsg.verify(data, SECRET512, "hmac-sha512", dnsmsg.Message(q).tsig().mac),
          "MAC of the signed answer")
    res = ddtest.dig(env.dns_port, "demo.ddport.test", "A",
                     extra=["-y", "hmac-sha256:xfr:" + base64.b64encode(SECRET).decode()])
    check_eq(res.status, "NOERROR", "dig -y query (%s)" % res.text[-200:])
    check("could not be validated" not in res.text and "failure" not in res.text,
          "dig could not verify the answer: %s" % res.text[-300:])


def t_tsig_errors(env):
    # A secret that is not ours: BADSIG, unsigned.
    msgs = transfer(env, "keyed.test", sign=signer(secret=b"wrong" * 6))
    m = msgs[0]
    check_eq((len(msgs), m.rcode_name, m.answer), (1, "NOTAUTH", []), "AXFR with a wrong secret")
    t = m.tsig()
    check(t is not None and t.error == 16 and t.mac == b"", "BADSIG answer's TSIG: %r"
          % ((t and (t.error, t.mac)),))
    check("TSIG BADSIG (wrong MAC) from 127.0.0.1" in env.ddport.stderr_text(),
          "BADSIG not logged: %s" % env.ddport.stderr_tail())
    # A key we do not have, or ours under another algorithm: BADKEY.
    for name, alg in (("nokey", "hmac-sha256"), ("xfr", "hmac-sha512")):
        m = transfer(env, "keyed.test", sign=signer(name, alg))[0]
        check_eq((m.rcode_name, m.tsig() and m.tsig().error), ("NOTAUTH", 17),
                 "AXFR signed with %s %s" % (name, alg))
    # Signed 1000 s ago: BADTIME, signed, with our clock in Other Data.
    q = dnsmsg.sign(dnsmsg.build_query("demo.ddport.test", "A", qid=9), "xfr", "hmac-sha256",
                    SECRET, time_signed=int(ddtest.time.time()) - 1000)
    data = dnsmsg.tcp_exchange(env.dns_port, q)
    m = dnsmsg.Message(data)
    t = m.tsig()
    check_eq((m.rcode_name, t and t.error), ("NOTAUTH", 18), "stale signature")
    check_eq(t.time_signed, dnsmsg.Message(q).tsig().time_signed, "BADTIME Time Signed")
    server_time = int.from_bytes(t.other, "big")
    check(len(t.other) == 6 and abs(server_time - ddtest.time.time()) < 60,
          "BADTIME Other Data %r is not the server's clock" % t.other)
    check(dnsmsg.verify(data, SECRET, "hmac-sha256", dnsmsg.Message(q).tsig().mac),
          "MAC of the BADTIME answer")
    # A TSIG that is not the last record: FORMERR.
    q = dnsmsg.sign(dnsmsg.build_query("demo.ddport.test", "A", qid=10), "xfr", "hmac-sha256",
                    SECRET)
    q = q[:10] + struct.pack("!H", 2) + q[12:] + b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    m = dnsmsg.Message(dnsmsg.udp_exchange(env.dns_port, q))
    check_eq(m.rcode_name, "FORMERR", "TSIG before OPT")


def t_still_running(env):
    check(env.ddport.running(), "ddport exited; stderr: %s" % env.ddport.stderr_tail())
    check_eq(env.ddport.stop(), 0, "exit status after SIGTERM")


CASES = [
    ("dig AXFR: SOA, NS, glue, every enabled device, SOA", t_dig_axfr),
    ("kdig AXFR", t_kdig_axfr),
    ("a large zone comes in several messages", t_big_zone_split),
    ("IXFR: whole zone from an old serial, SOA from the current one", t_ixfr),
    ("a query pipelined behind an AXFR is answered after it", t_pipelined_after_axfr),
    ("allow_transfer refuses, NOTAUTH below an apex", t_refused),
    ("transfers over UDP", t_udp),
    ("TSIG: signed multi-message AXFR, keys in allow_transfer", t_tsig_axfr),
    ("TSIG: signed queries get signed answers", t_tsig_query),
    ("TSIG: BADSIG, BADKEY, BADTIME, FORMERR", t_tsig_errors),
    ("ddport still running, SIGTERM exits 0", t_still_running),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
