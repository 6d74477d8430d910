#!/usr/bin/python3
"""ddport's authoritative DNS, end to end: dig (and kdig when installed)
against `ddport serve`. Loopback only."""

import os
import re
import select
import shutil
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
import dnsmsg  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

Z = ddtest.ZONE + "."


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.proxy_port = ddtest.free_port()
    env.dns_port = ddtest.free_port()
    backend_port = ddtest.free_port()  # no backend needed: DNS only
    dead_port = ddtest.free_port()
    env.config = ddtest.write_config(env.dir, env.proxy_port, env.dns_port, backend_port, dead_port)
    env.ddport = ddtest.Ddport(env.config, env.dir, tcp_ports=[env.proxy_port],
                               udp_ports=[env.dns_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        if env.ddport.running():
            env.ddport.stop()
    finally:
        env.tmp.cleanup()


def query(env, name, rtype, program=ddtest.DIG, extra=()):
    res = ddtest.dig(env.dns_port, name, rtype, program=program, extra=extra)
    check(res.rc == 0 and res.status is not None,
          "%s %s %s: no answer (exit %s): %s" % (os.path.basename(program), name, rtype, res.rc,
                                                 ddtest._one_line(res.text)[:300]))
    return res


def expect(res, status, what):
    check_eq(res.status, status, what + " status (" + res.describe() + ")")
    check("qr" in res.flags, what + ": qr flag missing, flags %s" % sorted(res.flags))
    if status in ("NOERROR", "NXDOMAIN"):
        check("aa" in res.flags, what + ": aa flag missing, flags %s" % sorted(res.flags))


def rdatas(res, section, rtype, owner=None):
    return sorted(" ".join(r[4]) for r in res.records(section, rtype)
                  if owner is None or r[0].lower() == owner.lower())


def check_soa_rdata(rdata, what):
    check_eq(len(rdata), 7, what + " SOA rdata field count")
    mname, rname = rdata[0], rdata[1]
    check(mname.endswith("."), what + ": SOA MNAME %r is not a name" % mname)
    check_eq(rname.lower(), ddtest.ZONE_SOA_RNAME + ".", what + " SOA RNAME")
    check(rdata[2].isdigit(), what + ": SOA serial %r is not a number" % rdata[2])
    check_eq(tuple(int(x) for x in rdata[3:7]), ddtest.ZONE_SOA_TIMERS,
             what + " SOA refresh/retry/expire/minimum")


def t_demo_a(env):
    res = query(env, "demo.ddport.test", "A")
    expect(res, "NOERROR", "demo A")
    check_eq(rdatas(res, "answer", "A", "demo.ddport.test."), [ddtest.ZONE_PROXY_V4], "demo A records")
    check_eq(sorted({r[1] for r in res.answer}), [ddtest.ZONE_TTL], "demo A TTL")
    check_eq(len(res.answer), 1, "answer section size")


def t_short(env):
    proc = ddtest.run([ddtest.DIG, "@127.0.0.1", "-p", str(env.dns_port), "+tries=1", "+time=2",
                       "+short", "demo.ddport.test", "A"], timeout=20)
    check_eq(proc.returncode, 0, "dig +short exit status")
    check_eq(proc.stdout.split(), [ddtest.ZONE_PROXY_V4], "dig +short output")


def t_no_recursion(env):
    res = query(env, "demo.ddport.test", "A")
    check("ra" not in res.flags, "authoritative-only server sets RA: flags %s" % sorted(res.flags))


def t_demo_aaaa(env):
    res = query(env, "demo.ddport.test", "AAAA")
    expect(res, "NOERROR", "demo AAAA")
    check_eq(rdatas(res, "answer", "AAAA", "demo.ddport.test."), [ddtest.ZONE_PROXY_V6],
             "demo AAAA records")


def t_wildcard(env):
    res = query(env, "x.wild.ddport.test", "A")
    expect(res, "NOERROR", "x.wild A")
    check_eq(rdatas(res, "answer", "A", "x.wild.ddport.test."), [ddtest.ZONE_PROXY_V4],
             "x.wild.ddport.test A records (owner must be the query name)")


def t_nxdomain(env):
    res = query(env, "unknown.ddport.test", "A")
    expect(res, "NXDOMAIN", "unknown A")
    check_eq(res.answer, [], "answer section of NXDOMAIN")
    soas = res.records("authority", "SOA")
    check_eq(len(soas), 1, "SOA records in authority of NXDOMAIN (%s)" % res.authority)
    check_eq(soas[0][0].lower(), Z, "SOA owner")
    check_soa_rdata(soas[0][4], "NXDOMAIN")


def t_refused(env):
    res = query(env, "example.com", "A")
    check_eq(res.status, "REFUSED", "example.com A status (" + res.describe() + ")")
    check_eq(res.answer, [], "answer of REFUSED")


def t_soa(env):
    res = query(env, ddtest.ZONE, "SOA")
    expect(res, "NOERROR", "apex SOA")
    soas = res.records("answer", "SOA")
    check_eq(len(soas), 1, "SOA records in answer")
    check_eq(soas[0][0].lower(), Z, "SOA owner")
    check_soa_rdata(soas[0][4], "apex")


def t_ns(env):
    res = query(env, ddtest.ZONE, "NS")
    expect(res, "NOERROR", "apex NS")
    check_eq([x.lower() for x in rdatas(res, "answer", "NS", Z)], [ddtest.ZONE_NS + "."],
             "apex NS records")


def t_ns_address(env):
    # The in-zone name server's address comes from `glue`.
    res = query(env, ddtest.ZONE_NS, "A")
    expect(res, "NOERROR", "ns1 A")
    check_eq(rdatas(res, "answer", "A", ddtest.ZONE_NS + "."), [ddtest.ZONE_NS_GLUE], "ns1 A records")


def t_nodata(env):
    res = query(env, "demo.ddport.test", "MX")
    expect(res, "NOERROR", "demo MX")
    check_eq(res.answer, [], "answer section of NODATA")
    soas = res.records("authority", "SOA")
    check_eq(len(soas), 1, "SOA in authority of NODATA (RFC 2308) (%s)" % res.authority)
    check_soa_rdata(soas[0][4], "NODATA")


def t_case(env):
    name = "DeMo.DdPoRt.TeSt"
    res = query(env, name, "A")
    expect(res, "NOERROR", name + " A")
    check_eq([q[0] for q in res.question], [name + "."], "question name as echoed")
    check_eq([r[0] for r in res.answer], [name + "."], "answer owner name")
    check_eq(rdatas(res, "answer", "A"), [ddtest.ZONE_PROXY_V4], name + " A records")


def t_edns(env):
    res = query(env, "demo.ddport.test", "A", extra=["+edns=0", "+bufsize=1232"])
    expect(res, "NOERROR", "EDNS0 demo A")
    m = re.search(r"^; EDNS: version: (\d+).*udp: (\d+)", res.text, re.M)
    check(m, "no OPT record in the answer to an EDNS0 query")
    check_eq(m.group(1), "0", "EDNS version")
    check(int(m.group(2)) >= 512, "advertised UDP size %s < 512" % m.group(2))
    check_eq(rdatas(res, "answer", "A"), [ddtest.ZONE_PROXY_V4], "EDNS0 demo A records")


def t_noedns(env):
    res = query(env, "demo.ddport.test", "A", extra=["+noedns"])
    expect(res, "NOERROR", "plain (no EDNS) demo A")
    check("; EDNS:" not in res.text, "OPT record in the answer to a query without EDNS")
    check_eq(rdatas(res, "answer", "A"), [ddtest.ZONE_PROXY_V4], "plain demo A records")


def t_notimp(env):
    res = query(env, "demo.ddport.test", "A", extra=["+opcode=2"])
    check_eq(res.status, "NOTIMP", "opcode STATUS (" + res.describe() + ")")
    check_eq(res.answer, [], "answer to an unknown opcode")


def t_any(env):
    # RFC 8482: ANY gets a minimal, non-empty answer. (+notcp: dig 9.18
    # otherwise sends ANY over TCP.)
    res = query(env, "demo.ddport.test", "ANY", extra=["+notcp"])
    expect(res, "NOERROR", "demo ANY")
    check(res.answer, "empty answer to ANY at an existing name")
    for r in res.answer:
        check_eq(r[0].lower(), "demo.ddport.test.", "owner of ANY answer record")
        check(r[3] in ("A", "AAAA", "HINFO"), "unexpected %s record in ANY answer" % r[3])


def dig_chaos(port, name, extra=()):
    """dig NAME TXT CH (the class must come after the type)."""
    proc = ddtest.run([ddtest.DIG, "@127.0.0.1", "-p", str(port), "+tries=1", "+time=2"]
                      + list(extra) + [name, "TXT", "CH"], timeout=20)
    return ddtest.DigResult(proc.returncode, proc.stdout)


def t_chaos_refused(env):
    # Off by default: a server does not tell strangers what it runs.
    for name in ("version.bind", "id.server"):
        res = dig_chaos(env.dns_port, name)
        check_eq(res.question, [(name + ".", "CH", "TXT")], "question sent")
        check_eq(res.status, "REFUSED", "CH TXT %s (%s)" % (name, res.describe()))


def t_cookie(env):
    # dig sends a client cookie; the answer must carry it back with a
    # server cookie, which dig checks ("good"), and which works when sent
    # back (RFC 7873).
    for tcp in ([], ["+tcp"]):
        res = query(env, "demo.ddport.test", "A", extra=["+cookie"] + tcp)
        m = re.search(r"^; COOKIE: ([0-9a-f]+) \(good\)$", res.text, re.M)
        check(m, "no good COOKIE in the answer: %s" % res.text[-400:])
        full = m.group(1)
        check_eq(len(full), 48, "client + server cookie hex length")
        res = query(env, "demo.ddport.test", "A", extra=["+cookie=" + full] + tcp)
        check(re.search(r"^; COOKIE: [0-9a-f]{48} \(good\)$", res.text, re.M),
              "no good COOKIE after sending ours back: %s" % res.text[-400:])
        check_eq(rdatas(res, "answer", "A"), [ddtest.ZONE_PROXY_V4], "answer with a cookie")
    # Without EDNS there is no cookie.
    res = query(env, "demo.ddport.test", "A", extra=["+noedns"])
    check("COOKIE" not in res.text, "cookie without EDNS")


def t_kdig(env):
    kdig = shutil.which("kdig")
    if not kdig:
        raise ddtest.Skip("kdig not installed (package knot-dnsutils)")
    res = query(env, "demo.ddport.test", "A", program=kdig)
    expect(res, "NOERROR", "kdig demo A")
    check_eq(rdatas(res, "answer", "A", "demo.ddport.test."), [ddtest.ZONE_PROXY_V4],
             "kdig demo A records")
    res = query(env, "demo.ddport.test", "AAAA", program=kdig, extra=["+noedns"])
    expect(res, "NOERROR", "kdig +noedns demo AAAA")
    check_eq(rdatas(res, "answer", "AAAA", "demo.ddport.test."), [ddtest.ZONE_PROXY_V6],
             "kdig +noedns demo AAAA records")


def t_burst(env):
    # More queries than one read takes, from three sockets, sent before any
    # answer is read: each must come back once, to the socket that asked,
    # with its own ID and the rcode its name calls for.
    names = [("demo.ddport.test", 0), ("nobody.ddport.test", 3)]
    socks = []
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.connect(("127.0.0.1", env.dns_port))
            s.setblocking(False)
            socks.append(s)
        want = {}  # (socket index, id) -> (name, rcode)
        for qid in range(150):
            k = qid % len(socks)
            name, rcode = names[qid % 2]
            socks[k].send(dnsmsg.build_query(name, "A", qid=qid, edns=1232))
            want[(k, qid)] = (name, rcode)
        got = {}
        deadline = time.monotonic() + 10
        while len(got) < len(want) and time.monotonic() < deadline:
            ready, _, _ = select.select(socks, [], [], 0.5)
            for s in ready:
                k = socks.index(s)
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    m = dnsmsg.Message(data)
                    check((k, m.id) not in got, "answer %d on socket %d came twice" % (m.id, k))
                    got[(k, m.id)] = (m.question[0][0].rstrip("."), m.rcode)
        check_eq(sorted(got), sorted(want), "answers per socket and ID")
        check_eq(got, want, "name and rcode of each answer")
    finally:
        for s in socks:
            s.close()


def t_big_query(env):
    # The largest datagram IPv4 carries (an EDNS padding option fills it)
    # is read whole and answered.
    query = dnsmsg.build_query("demo.ddport.test", "A", qid=0x4242)
    pad = 65507 - len(query) - 11 - 4
    query = query[:10] + struct.pack("!H", 1) + query[12:]
    query += b"\0" + struct.pack("!HHIH", 41, 1232, 0, 4 + pad) + struct.pack("!HH", 12, pad)
    query += bytes(pad)
    check_eq(len(query), 65507, "query size")
    m = dnsmsg.Message(dnsmsg.udp_exchange(env.dns_port, query))
    check_eq((m.id, m.rcode_name), (0x4242, "NOERROR"), "answer to the largest query")
    check_eq([r.type for r in m.answer], [1], "answer records")


def t_still_running(env):
    check(env.ddport.running(), "ddport exited during the tests (status %s); stderr: %s"
          % (env.ddport.proc.returncode, env.ddport.stderr_tail()))


def t_sigterm(env):
    rc = env.ddport.stop()
    check(rc is not None, "ddport did not exit within 15 s of SIGTERM (killed)")
    check_eq(rc, 0, "exit status after SIGTERM")


CASES = [
    ("demo.ddport.test A is the proxy's IPv4, authoritative", t_demo_a),
    ("dig +short demo.ddport.test A", t_short),
    ("no recursion available (RA clear)", t_no_recursion),
    ("demo.ddport.test AAAA is the proxy's IPv6", t_demo_aaaa),
    ("wildcard x.wild.ddport.test A", t_wildcard),
    ("unknown name: NXDOMAIN with SOA in authority", t_nxdomain),
    ("name outside our zones: REFUSED", t_refused),
    ("apex SOA", t_soa),
    ("apex NS", t_ns),
    ("name server address from glue", t_ns_address),
    ("MX at a device: NODATA", t_nodata),
    ("query case is preserved", t_case),
    ("EDNS0 query is answered with OPT", t_edns),
    ("query without EDNS is answered without OPT", t_noedns),
    ("unknown opcode: NOTIMP", t_notimp),
    ("ANY is answered minimally over UDP", t_any),
    ("CHAOS version.bind refused by default", t_chaos_refused),
    ("DNS cookies: server cookie returned, dig calls it good", t_cookie),
    ("kdig query", t_kdig),
    ("a burst from three sockets: every query answered to its sender", t_burst),
    ("a 65507-byte query is read whole and answered", t_big_query),
    ("ddport still running after the cases above", t_still_running),
    ("SIGTERM: ddport exits 0", t_sigterm),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
