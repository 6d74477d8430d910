#!/usr/bin/python3
"""DNS over TCP against a real `ddport serve`: dig/kdig +tcp, pipelining on
one connection, answers too big for UDP fetched whole over TCP, the idle
timeout, the connection limit, and malformed frames. Loopback only."""

import os
import shutil
import socket
import struct
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
import dnsmsg  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

BIG_V6 = 100  # AAAA records of big.test names: about 2.8 KB, over any UDP size
TCP_LIMIT = 4


class Env:
    pass


def config(env, idle, limit, rate_limit="off"):
    backend = ddtest.free_port()
    text = ddtest.config_text(env.proxy_port, env.dns_port, backend, backend,
                              extra_devices="  host.big.test: {address: 127.0.0.1, "
                                            "ports: {http: %d}}\n" % backend)
    text = text.replace("  zones:\n", "  tcp_idle: %s\n  tcp_connections: %d\n"
                        "  version: on\n  identity: ddport-test-7\n  rate_limit: %s\n  zones:\n"
                        % (idle, limit, rate_limit), 1)
    proxies = ", ".join('"2001:db8::%x"' % (i + 1) for i in range(BIG_V6))
    text = text.replace("devices:\n", "    - {name: big.test, proxy: [%s]}\ndevices:\n"
                        % proxies, 1)
    return text


def start(env, name, idle, limit, rate_limit="off"):
    return ddtest.start_on_free_ports(env, name, lambda: config(env, idle, limit, rate_limit))


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.ddport = None
    env.ddport = ddtest.started(env, teardown, lambda: start(env, "ddport", "1h", TCP_LIMIT))
    return env


def teardown(env):
    try:
        if env.ddport is not None and env.ddport.running():
            env.ddport.stop()
    finally:
        env.tmp.cleanup()


def t_dig_tcp(env):
    res = ddtest.dig(env.dns_port, "demo.ddport.test", "A", extra=["+tcp"])
    check_eq(res.status, "NOERROR", "dig +tcp status (%s)" % res.describe())
    check("aa" in res.flags, "aa flag missing over TCP")
    check_eq([r[4] for r in res.answer], [[ddtest.ZONE_PROXY_V4]], "dig +tcp answer")
    check("TCP" in res.text, "dig did not report a TCP exchange")
    res = ddtest.dig(env.dns_port, "nobody.ddport.test", "A", extra=["+tcp"])
    check_eq(res.status, "NXDOMAIN", "dig +tcp unknown name")


def t_kdig_tcp(env):
    kdig = shutil.which("kdig")
    if not kdig:
        raise ddtest.Skip("kdig not installed (package knot-dnsutils)")
    res = ddtest.dig(env.dns_port, "x.wild.ddport.test", "AAAA", program=kdig, extra=["+tcp"])
    check_eq(res.status, "NOERROR", "kdig +tcp status (%s)" % res.describe())
    check_eq([r[4] for r in res.answer], [[ddtest.ZONE_PROXY_V6]], "kdig +tcp answer")


def t_pipelined(env):
    queries = [("demo.ddport.test", "A", "NOERROR"), ("demo.ddport.test", "AAAA", "NOERROR"),
               ("nobody.ddport.test", "A", "NXDOMAIN"), ("example.com", "A", "REFUSED"),
               ("ddport.test", "SOA", "NOERROR")]
    with dnsmsg.tcp_connect(env.dns_port) as s:
        # All queries in one write: the server must answer each, in order.
        s.sendall(b"".join(dnsmsg.frame(dnsmsg.build_query(n, t, qid=100 + i))
                           for i, (n, t, _) in enumerate(queries)))
        for i, (name, rtype, status) in enumerate(queries):
            m = dnsmsg.Message(dnsmsg.recv_frame(s))
            check_eq(m.id, 100 + i, "id of pipelined answer %d" % i)
            check_eq(m.rcode_name, status, "%s %s over TCP" % (name, rtype))
            check_eq(m.question[0][0], name + ".", "question of answer %d" % i)
        # The connection stays usable, and a message split across writes
        # (even inside the length prefix) is reassembled.
        q = dnsmsg.frame(dnsmsg.build_query("demo.ddport.test", "A", qid=7))
        for part in (q[:1], q[1:9], q[9:]):
            s.sendall(part)
            ddtest.time.sleep(0.05)
        m = dnsmsg.Message(dnsmsg.recv_frame(s))
        check_eq((m.id, m.rcode_name, [r.text(m.data) for r in m.answer]),
                 (7, "NOERROR", ["127.0.0.1"]), "split query")


def t_truncated_udp_whole_tcp(env):
    q = dnsmsg.build_query("host.big.test", "AAAA", qid=11, edns=1232)
    udp = dnsmsg.Message(dnsmsg.udp_exchange(env.dns_port, q))
    check(udp.flag("tc"), "UDP answer of %d AAAA records not truncated" % BIG_V6)
    check_eq(udp.answer, [], "records in a truncated UDP answer")
    tcp_data = dnsmsg.tcp_exchange(env.dns_port, q)
    tcp = dnsmsg.Message(tcp_data)
    check(not tcp.flag("tc"), "TC set over TCP")
    check_eq(tcp.rcode_name, "NOERROR", "TCP status")
    check_eq(sorted(r.text(tcp_data) for r in tcp.answer),
             sorted("2001:db8::%x" % (i + 1) for i in range(BIG_V6)), "AAAA over TCP")
    check(len(tcp_data) > 1232, "TCP answer only %d bytes" % len(tcp_data))
    # dig, like any resolver, retries over TCP by itself on TC.
    res = ddtest.dig(env.dns_port, "host.big.test", "AAAA")
    check_eq(res.status, "NOERROR", "dig status (%s)" % res.describe()[:200])
    check_eq(len(res.records("answer", "AAAA")), BIG_V6, "AAAA records dig got after TC")
    check("Truncated, retrying in TCP mode" in res.text, "dig did not see TC over UDP")


def t_half_close(env):
    with dnsmsg.tcp_connect(env.dns_port) as s:
        s.sendall(dnsmsg.frame(dnsmsg.build_query("demo.ddport.test", "A", qid=21)))
        s.shutdown(socket.SHUT_WR)
        m = dnsmsg.Message(dnsmsg.recv_frame(s))
        check_eq(m.id, 21, "answer after the client's FIN")
        check(dnsmsg.closed_by_peer(s, 10), "server did not close after answering a half-closed client")


def t_garbage(env):
    cases = [
        ("length below a DNS header", struct.pack("!H", 5) + b"hello"),
        ("a 64 KiB response (QR set) instead of a query",
         dnsmsg.frame(struct.pack("!HHHHHH", 1, 0x8000, 0, 0, 0, 0) + b"\xAA" * (65535 - 12))),
        ("zero length", b"\0\0"),
    ]
    for what, data in cases:
        with dnsmsg.tcp_connect(env.dns_port) as s:
            s.sendall(data)
            check(dnsmsg.closed_by_peer(s, 10), "%s: connection not closed" % what)
    # 64 KiB of random bytes that do look like a query: FORMERR or a close,
    # never a crash.
    junk = bytes(ddtest.random.Random(5).randrange(256) for _ in range(65535 - 12))
    with dnsmsg.tcp_connect(env.dns_port) as s:
        s.sendall(dnsmsg.frame(struct.pack("!HHHHHH", 9, 0, 1, 0, 0, 0) + junk))
        m = dnsmsg.Message(dnsmsg.recv_frame(s))
        check_eq(m.rcode_name, "FORMERR", "64 KiB of junk")
    m = dnsmsg.Message(dnsmsg.tcp_exchange(env.dns_port, dnsmsg.build_query("demo.ddport.test")))
    check_eq(m.rcode_name, "NOERROR", "answer after the malformed frames")


def t_connection_limit(env):
    held = []
    try:
        for i in range(TCP_LIMIT):
            s = dnsmsg.tcp_connect(env.dns_port)
            held.append(s)
            s.sendall(dnsmsg.frame(dnsmsg.build_query("demo.ddport.test", qid=i)))
            check_eq(dnsmsg.Message(dnsmsg.recv_frame(s)).id, i, "answer on connection %d" % i)
        with dnsmsg.tcp_connect(env.dns_port) as s:
            s.sendall(dnsmsg.frame(dnsmsg.build_query("demo.ddport.test")))
            check(dnsmsg.closed_by_peer(s, 10),
                  "connection %d over tcp_connections was not closed" % (TCP_LIMIT + 1))
        # Freeing a place lets the next client in (the close reaches the
        # server asynchronously: retry a bounded number of times).
        held.pop().close()
        for attempt in range(50):
            try:
                m = dnsmsg.Message(dnsmsg.tcp_exchange(env.dns_port,
                                                       dnsmsg.build_query("demo.ddport.test")))
                check_eq(m.rcode_name, "NOERROR", "answer once under the limit")
                return
            except (EOFError, ConnectionResetError):
                ddtest.time.sleep(0.1)
        raise ddtest.Failure("no answer after a connection under the limit was freed")
    finally:
        for s in held:
            s.close()


def t_idle_timeout(env):
    # A second ddport with a 1 s idle timeout.
    main_ports = env.proxy_port, env.dns_port
    d = start(env, "idle", "1s", 100)
    try:
        with dnsmsg.tcp_connect(env.dns_port) as s:
            check(dnsmsg.closed_by_peer(s, 15), "silent connection not closed by tcp_idle")
        with dnsmsg.tcp_connect(env.dns_port) as s:
            s.sendall(dnsmsg.frame(dnsmsg.build_query("demo.ddport.test", qid=3)))
            check_eq(dnsmsg.Message(dnsmsg.recv_frame(s)).id, 3, "answer before idling")
            # An incomplete message does not count as activity.
            s.sendall(b"\x00\x20\x00")
            check(dnsmsg.closed_by_peer(s, 15), "connection with a partial query not closed")
        check_eq(d.stop(), 0, "exit status of the idle ddport")
    finally:
        if d.running():
            d.stop()
        env.proxy_port, env.dns_port = main_ports


def dig_chaos(port, name, extra=()):
    """dig NAME TXT CH (the class must come after the type)."""
    proc = ddtest.run([ddtest.DIG, "@127.0.0.1", "-p", str(port), "+tries=1", "+time=2"]
                      + list(extra) + [name, "TXT", "CH"], timeout=20)
    return ddtest.DigResult(proc.returncode, proc.stdout)


def t_chaos(env):
    for name, want in (("version.bind", '"ddport 0.1.0"'), ("id.server", '"ddport-test-7"')):
        for tcp in ([], ["+tcp"]):
            res = dig_chaos(env.dns_port, name, tcp)
            check_eq(res.status, "NOERROR", "CH TXT %s (%s)" % (name, res.describe()))
            check_eq([(r[2], " ".join(r[4])) for r in res.answer], [("CH", want)],
                     "CH TXT %s answer" % name)
    res = dig_chaos(env.dns_port, "authors.bind")
    check_eq(res.status, "REFUSED", "CH TXT authors.bind")


def cookie_query(qid, cookie):
    q = dnsmsg.build_query("demo.ddport.test", "A", qid=qid)
    option = struct.pack("!HH", 10, len(cookie)) + cookie
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option
    return q[:10] + struct.pack("!H", 1) + q[12:] + opt


def t_rate_limit(env):
    # A third ddport, limiting each /24 to 5 UDP answers a second, every
    # second answer over the limit slipped out truncated.
    main_ports = env.proxy_port, env.dns_port
    d = start(env, "rrl", "10s", 100, "{responses_per_second: 5, slip: 2}")
    try:
        burst = 40
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.connect(("127.0.0.1", env.dns_port))
            first = ddtest.time.time()
            for i in range(burst):
                s.send(dnsmsg.build_query("demo.ddport.test", "A", qid=1000 + i))
            last = ddtest.time.time()
            full = truncated = 0
            s.settimeout(1.0)
            for _ in range(burst):
                try:
                    m = dnsmsg.Message(s.recv(4096))
                except socket.timeout:
                    break
                if m.flag("tc"):
                    check_eq((m.answer, len(m.question)), ([], 1), "slipped answer")
                    truncated += 1
                else:
                    check_eq(len(m.answer), 1, "full answer")
                    full += 1
                # The server counts an answer in the second it answers,
                # which on a slow build may come after the last send.
                last = ddtest.time.time()
        seconds = int(last) - int(first) + 1
        check(full <= 5 * seconds, "%d full answers to a burst of %d within %d s (limit 5/s)"
              % (full, burst, seconds))
        check(full >= 1 and truncated >= 1, "full %d, truncated %d" % (full, truncated))
        check(full + truncated < burst, "nothing dropped (%d + %d of %d)" % (full, truncated, burst))
        # TCP is not limited: the truncated client gets its answer there,
        # and a server cookie with it.
        client = bytes(range(11, 19))
        q = cookie_query(1, client)
        m = dnsmsg.Message(dnsmsg.tcp_exchange(env.dns_port, q))
        check_eq([r.text(m.data) for r in m.answer], ["127.0.0.1"], "TCP answer while limited")
        opt = m.additional[-1].rdata
        check(len(opt) == 28 and opt[4:12] == client, "no server cookie over TCP: %s" % opt.hex())
        # A client returning our cookie is not spoofed: never limited.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", env.dns_port))
            for i in range(burst):
                s.send(cookie_query(2000 + i, opt[4:28]))
            s.settimeout(5.0)
            full = 0
            for _ in range(burst):
                m = dnsmsg.Message(s.recv(4096))
                check(not m.flag("tc") and len(m.answer) == 1,
                      "answer %d to a query with a good cookie was limited" % full)
                full += 1
        check_eq(full, burst, "answers to queries with a good server cookie")
        check_eq(d.stop(), 0, "exit status of the rate-limited ddport")
    finally:
        if d.running():
            d.stop()
        env.proxy_port, env.dns_port = main_ports


def t_still_running(env):
    check(env.ddport.running(), "ddport exited during the tests; stderr: %s"
          % env.ddport.stderr_tail())


def t_sigterm(env):
    # An open connection does not hold up the exit.
    with dnsmsg.tcp_connect(env.dns_port):
        check_eq(env.ddport.stop(), 0, "exit status after SIGTERM with a TCP client connected")


CASES = [
    ("dig +tcp: answer and NXDOMAIN", t_dig_tcp),
    ("kdig +tcp", t_kdig_tcp),
    ("pipelined queries on one connection, answered in order", t_pipelined),
    ("answer truncated over UDP comes whole over TCP", t_truncated_udp_whole_tcp),
    ("client half-closes: answer, then close", t_half_close),
    ("malformed and oversized frames close the connection", t_garbage),
    ("tcp_connections limit", t_connection_limit),
    ("tcp_idle closes silent connections", t_idle_timeout),
    ("CHAOS version.bind and id.server answered when configured", t_chaos),
    ("rate_limit: UDP answers per /24 limited, some slipped truncated", t_rate_limit),
    ("ddport still running", t_still_running),
    ("SIGTERM with an open TCP connection: exit 0", t_sigterm),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
