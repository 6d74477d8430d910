#!/usr/bin/python3
"""Edges of routing and relaying: per-listener fallback devices, a reset
passed on as a reset, and a target refused by the policy. Raw TCP devices
record what reaches them. Loopback only; every wait bounded."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

# A device that speaks first, a lot: its bytes race the visitor's first
# write through the proxy.
GREETING = bytes(range(256)) * 16384  # 4 MiB

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{http_port}, fallback: home.ddport.test}}
  - {{name: https, protocol: tls, address: 127.0.0.1:{tls_port}, fallback: home.ddport.test}}
  - {{name: plain, protocol: http, address: 127.0.0.1:{plain_port}}}
proxy:
  timeouts: {{peek: 3s, connect: 3s, idle: 1m, drain: 1s}}
  allow_targets: [127.0.0.1/32]
  access_log: stderr
devices:
  home.ddport.test: {{address: 127.0.0.1, ports: {{http: {home}, https: {home}, plain: {home}}}}}
  resetter.ddport.test: {{address: 127.0.0.1, ports: {{http: {resetter}}}}}
  other-loopback.ddport.test: {{address: 127.0.0.2, ports: {{http: {home}}}}}
  talker.ddport.test: {{address: 127.0.0.1, ports: {{http: {talker}}}}}
"""


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.home = ddtest.RawDevice()
    env.resetter = ddtest.RawDevice(reset=True)
    env.talker = ddtest.RawDevice(greeting=GREETING)
    env.http_port = ddtest.free_port(udp_too=False)
    env.tls_port = ddtest.free_port(udp_too=False)
    env.plain_port = ddtest.free_port(udp_too=False)
    config = ddtest.write_file(env.dir, "ddport.yaml", CONFIG.format(
        http_port=env.http_port, tls_port=env.tls_port, plain_port=env.plain_port,
        home=env.home.port, resetter=env.resetter.port, talker=env.talker.port))
    env.ddport = ddtest.Ddport(config, env.dir,
                               tcp_ports=[env.http_port, env.tls_port, env.plain_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        ddtest.stop_checked(env.ddport)
    finally:
        env.home.stop()
        env.resetter.stop()
        env.talker.stop()
        env.tmp.cleanup()


def exchange(port, payload, timeout=10):
    """Sends payload, reads to EOF; returns (reply, error or None)."""
    _, reply, err = ddtest.send_and_read(port, payload, timeout)
    return reply, err


def arrived(device, payload, before):
    check_eq(device.wait_received(before), payload, "bytes at the fallback device")


def test_fallback_unknown_host(env):
    before = len(env.home.received)
    req = b"GET / HTTP/1.1\r\nHost: nobody.ddport.test\r\n\r\n"
    reply, _ = exchange(env.http_port, req)
    check(reply.endswith(b"ok"), "reply from the fallback device: %r" % reply[-60:])
    arrived(env.home, req, before)


def test_fallback_http10_without_host(env):
    before = len(env.home.received)
    req = b"GET / HTTP/1.0\r\n\r\n"
    reply, _ = exchange(env.http_port, req)
    check(reply.endswith(b"ok"), "reply from the fallback device")
    arrived(env.home, req, before)


def test_no_fallback_http10_is_400(env):
    reply, _ = exchange(env.plain_port, b"GET / HTTP/1.0\r\n\r\n")
    check(reply.startswith(b"HTTP/1.1 400 "), "expected 400, got %r" % reply[:40])


def test_fallback_tls_without_sni(env):
    with open(os.path.join(ddtest.SOURCE, "tests", "data",
                           "clienthello_openssl_nosni.bin"), "rb") as f:
        hello = f.read()
    before = len(env.home.received)
    exchange(env.tls_port, hello)
    arrived(env.home, hello, before)


def test_reset_passed_on(env):
    reply, err = exchange(env.http_port,
                          b"GET / HTTP/1.1\r\nHost: resetter.ddport.test\r\n\r\n")
    check(reply.endswith(b"partial"), "the bytes before the reset arrive: %r" % reply[-40:])
    check(isinstance(err, ConnectionResetError),
          "expected a reset after the partial body, got %r" % (err,))


def test_refused_target(env):
    # 127.0.0.2 is loopback, and allow_targets names only 127.0.0.1/32.
    reply, _ = exchange(env.http_port,
                        b"GET / HTTP/1.1\r\nHost: other-loopback.ddport.test\r\n\r\n")
    check(reply.startswith(b"HTTP/1.1 502 "), "expected 502, got %r" % reply[:40])
    check("target 127.0.0.2 refused: loopback address" in env.ddport.stderr_text(),
          "the refusal is logged with its reason")


def test_device_speaks_first(env):
    for _ in range(5):
        before = len(env.talker.received)
        req = b"GET / HTTP/1.1\r\nHost: talker.ddport.test\r\n\r\n"
        reply, err = exchange(env.http_port, req, timeout=30)
        check(err is None, "error reading the greeting: %r" % (err,))
        check_eq(len(reply), len(GREETING) + len(ddtest.RAW_REPLY), "bytes relayed back")
        check(reply[:len(GREETING)] == GREETING, "the greeting arrived changed")
        check_eq(env.talker.wait_received(before), req, "request at the device")


CASES = [
    ("a device that speaks first with 4 MiB relays both ways intact",
     test_device_speaks_first),
    ("unknown Host goes to the listener's fallback device", test_fallback_unknown_host),
    ("HTTP/1.0 without Host goes to the fallback device", test_fallback_http10_without_host),
    ("HTTP/1.0 without Host and no fallback gets 400", test_no_fallback_http10_is_400),
    ("ClientHello without SNI goes to the fallback device", test_fallback_tls_without_sni),
    ("a device's reset reaches the visitor as a reset", test_reset_passed_on),
    ("a loopback target outside allow_targets is refused: 502", test_refused_target),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
