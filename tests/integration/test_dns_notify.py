#!/usr/bin/python3
"""NOTIFY (RFC 1996) from a real `ddport serve` to stand-in secondaries
(UDP sockets of this test): sent at start, retried until answered, signed
with TSIG when the target names a key, and the outcome logged. The answer
to a signed NOTIFY acknowledges it only when signed right (RFC 8945 5.3):
unsigned or badly signed answers are logged and the NOTIFY is retried.
The real secondary (Knot) is in test_dns_secondary.py. Loopback only."""

import base64
import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
import dnsmsg  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

SECRET = bytes(range(50, 82))
WRONG_SECRET = bytes(range(51, 83))


class Env:
    pass


def bind_udp():
    for _ in range(20):
        port = ddtest.free_port()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
            return s, port
        except OSError:
            s.close()
    raise RuntimeError("no free UDP port")


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.socks = {}
    env.ddport = None
    try:
        for name in ("plain", "signed", "badsig", "refuses"):
            env.socks[name] = bind_udp()
        env.proxy_port = ddtest.free_port()
        env.dns_port = ddtest.free_port()
        text = ddtest.config_text(env.proxy_port, env.dns_port, env.proxy_port, env.proxy_port)
        soa = "      soa: {email: hostmaster@ddport.test, refresh: 1h, retry: 10m, expire: 7d, minimum: 60}\n"
        notify = ("      notify: [127.0.0.1:%d, {address: 127.0.0.1:%d, key: xfr},"
                  " {address: 127.0.0.1:%d, key: xfr}, 127.0.0.1:%d]\n"
                  % (env.socks["plain"][1], env.socks["signed"][1], env.socks["badsig"][1],
                     env.socks["refuses"][1]))
        text = text.replace(soa, soa + notify, 1)
        text = text.replace("  zones:\n", "  tsig_keys: {xfr: {secret: %s}}\n  zones:\n"
                            % base64.b64encode(SECRET).decode(), 1)
        path = ddtest.write_file(env.dir, "ddport.yaml", text)
        env.ddport = ddtest.Ddport(path, env.dir, tcp_ports=[env.proxy_port],
                                   udp_ports=[env.dns_port])
        env.ddport.start()
    except Exception:
        teardown(env)
        raise
    return env


def teardown(env):
    try:
        if env.ddport is not None and env.ddport.running():
            env.ddport.stop()
    finally:
        for s, _ in env.socks.values():
            s.close()
        env.tmp.cleanup()


def receive(sock, timeout=15):
    sock.settimeout(timeout)
    data, addr = sock.recvfrom(65535)
    return data, addr


def drain(sock):
    """Drops the tries queued so far (sent before an answer just given:
    retries are a second or more apart)."""
    sock.setblocking(False)
    try:
        while True:
            sock.recvfrom(65535)
    except BlockingIOError:
        pass


def reply(sock, addr, query, rcode=0, secret=None, request_mac=True):
    """Answers query; with secret, signed with key xfr, covering the
    query's MAC unless request_mac is False."""
    m = dnsmsg.Message(query)
    q = m.question[0]
    msg = struct.pack("!HHHHHH", m.id, 0x8000 | (4 << 11) | 0x0400 | rcode, 1, 0, 0, 0)
    msg += dnsmsg.encode_name(q[0]) + struct.pack("!HH", q[1], q[2])
    if secret is not None:
        t = m.tsig()
        msg = dnsmsg.sign(msg, "xfr", "hmac-sha256", secret,
                          request_mac=t.mac if request_mac else None)
    sock.sendto(msg, addr)
    drain(sock)


def check_notify(env, data, what):
    m = dnsmsg.Message(data)
    check_eq((m.flags >> 11) & 0xF, 4, what + ": opcode")
    check(m.flag("aa") and not m.flag("qr"), what + ": flags %04x" % m.flags)
    check_eq(m.question, [("ddport.test.", 6, 1)], what + ": question")
    soa = [r for r in m.answer if r.type == 6]
    check_eq(len(soa), 1, what + ": SOA in the answer section")
    serial = int(soa[0].text(data).split()[2])
    res = ddtest.dig(env.dns_port, "ddport.test", "SOA")
    check_eq(serial, int(res.records("answer", "SOA")[0][4][2]), what + ": serial")
    return m


def wait_log(env, text, timeout=15, times=1):
    """True once text is in the log times times."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        if env.ddport.stderr_text().count(text) >= times:
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return False


def t_plain_retry_ack(env):
    sock, port = env.socks["plain"]
    first, addr = receive(sock)
    m1 = check_notify(env, first, "first NOTIFY")
    check(m1.tsig() is None, "NOTIFY to a target without a key is signed")
    # Unanswered, it comes again, with the same ID.
    again, addr = receive(sock)
    check_eq(dnsmsg.Message(again).id, m1.id, "ID of the retried NOTIFY")
    reply(sock, addr, again)
    check(wait_log(env, "to 127.0.0.1:%d acknowledged" % port),
          "acknowledgement not logged: %s" % env.ddport.stderr_tail())


def check_not_acknowledged(env, sock, port, why, m, times=1):
    """The answer just sent was logged (the times-th such line) as no
    acknowledgement, and the NOTIFY comes again (same ID); returns the new
    try."""
    check(wait_log(env, "to 127.0.0.1:%d: the answer %s; not an acknowledgement, retrying"
                   % (port, why), times=times),
          "answer that %s not logged: %s" % (why, env.ddport.stderr_tail()))
    data, addr = receive(sock)
    check_eq(dnsmsg.Message(data).id, m.id, "ID of the NOTIFY retried after an answer that " + why)
    check("to 127.0.0.1:%d acknowledged" % port not in env.ddport.stderr_text(),
          "an answer that %s was taken as an acknowledgement" % why)
    return data, addr


def check_signed_ack(env, sock, port, data, addr):
    """An answer signed right, covering the MAC of the NOTIFY it answers,
    acknowledges it."""
    reply(sock, addr, data, secret=SECRET)
    check(wait_log(env, "to 127.0.0.1:%d acknowledged (TSIG verified)" % port),
          "acknowledgement not logged: %s" % env.ddport.stderr_tail())


def t_signed(env):
    sock, port = env.socks["signed"]
    data, addr = receive(sock)
    m = check_notify(env, data, "signed NOTIFY")
    t = m.tsig()
    check(t is not None and t.name == "xfr." and t.algorithm == "hmac-sha256.",
          "NOTIFY to a target with key xfr is not signed with it")
    check(dnsmsg.verify(data, SECRET, "hmac-sha256", None), "MAC of the NOTIFY")
    # Unsigned, as from a secondary that does not know the key (NOTAUTH):
    # anybody could have sent it.
    reply(sock, addr, data, rcode=9)
    data, addr = check_not_acknowledged(env, sock, port, "is not signed", m)
    check_signed_ack(env, sock, port, data, addr)


def t_signed_wrong(env):
    sock, port = env.socks["badsig"]
    data, addr = receive(sock)
    m = dnsmsg.Message(data)
    # Another secret.
    reply(sock, addr, data, secret=WRONG_SECRET)
    data, addr = check_not_acknowledged(env, sock, port, "has a wrong MAC", m)
    # The right secret, but not chained to the NOTIFY's MAC.
    reply(sock, addr, data, secret=SECRET, request_mac=False)
    data, addr = check_not_acknowledged(env, sock, port, "has a wrong MAC", m, times=2)
    check_signed_ack(env, sock, port, data, addr)


def t_refused(env):
    sock, port = env.socks["refuses"]
    data, addr = receive(sock)
    reply(sock, addr, data, rcode=5)
    check(wait_log(env, "to 127.0.0.1:%d answered with rcode 5 (REFUSED" % port),
          "refusal not logged: %s" % env.ddport.stderr_tail())


def t_sigterm(env):
    check(env.ddport.running(), "ddport exited; stderr: %s" % env.ddport.stderr_tail())
    check_eq(env.ddport.stop(), 0, "exit status after SIGTERM with NOTIFYs outstanding")


CASES = [
    ("NOTIFY at start, retried with the same ID until answered", t_plain_retry_ack),
    ("NOTIFY signed with the target's TSIG key; only a signed answer acknowledges it",
     t_signed),
    ("answers signed wrongly or not at all are logged and the NOTIFY retried", t_signed_wrong),
    ("a REFUSED answer is logged", t_refused),
    ("SIGTERM: exit 0", t_sigterm),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
