#!/usr/bin/python3
"""PROXY protocol v1/v2 ahead of the relayed bytes: a raw TCP device records
exactly what arrives, and the test checks it byte for byte against the
visitor's real address and the listener it reached. Loopback only."""

import os
import socket
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{http_port}}}
  - {{name: https, protocol: tls, address: 127.0.0.1:{tls_port}}}
proxy:
  timeouts: {{peek: 3s, connect: 3s, idle: 1m, drain: 1s}}
  allow_targets: [127.0.0.0/8]
  access_log: stderr
devices:
  v1.ddport.test: {{address: 127.0.0.1, ports: {{http: {dev_port}}}, proxy_protocol: v1}}
  v2.ddport.test: {{address: 127.0.0.1, ports: {{http: {dev_port}}}, proxy_protocol: v2}}
  plain.ddport.test: {{address: 127.0.0.1, ports: {{http: {dev_port}}}}}
  cam.example.net: {{address: 127.0.0.1, ports: {{https: {dev_port}}}, proxy_protocol: v2}}
"""


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.device = ddtest.RawDevice()
    env.http_port = ddtest.free_port(udp_too=False)
    env.tls_port = ddtest.free_port(udp_too=False)
    config = ddtest.write_file(env.dir, "ddport.yaml", CONFIG.format(
        http_port=env.http_port, tls_port=env.tls_port, dev_port=env.device.port))
    env.ddport = ddtest.Ddport(config, env.dir, tcp_ports=[env.http_port, env.tls_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        ddtest.stop_checked(env.ddport)
    finally:
        env.device.stop()
        env.tmp.cleanup()


def exchange(env, port, payload):
    """Sends payload from a fresh connection; returns (our address, reply,
    what the device received)."""
    before = len(env.device.received)
    me, reply, err = ddtest.send_and_read(port, payload)
    check(err is None, "reading the reply: %r" % (err,))
    return me, reply, env.device.wait_received(before)


def request(name):
    return ("GET /pp HTTP/1.1\r\nHost: %s\r\nUser-Agent: t\r\n\r\n" % name).encode()


def test_v1_header(env):
    req = request("v1.ddport.test")
    (ip, port), reply, got = exchange(env, env.http_port, req)
    want = ("PROXY TCP4 %s 127.0.0.1 %d %d\r\n" % (ip, port, env.http_port)).encode() + req
    check_eq(got, want, "bytes at the device")
    check(reply.endswith(b"ok"), "reply relayed back: %r" % reply[-40:])


def test_v2_header(env):
    req = request("v2.ddport.test")
    (ip, port), reply, got = exchange(env, env.http_port, req)
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 12) + \
        socket.inet_aton(ip) + socket.inet_aton("127.0.0.1") + \
        struct.pack("!HH", port, env.http_port)
    check_eq(got, header + req, "bytes at the device")
    check(reply.endswith(b"ok"), "reply relayed back")


def test_no_header_when_off(env):
    req = request("plain.ddport.test")
    _, _, got = exchange(env, env.http_port, req)
    check_eq(got, req, "bytes at the device")


def test_v2_before_tls_hello(env):
    with open(os.path.join(ddtest.SOURCE, "tests", "data", "clienthello_openssl.bin"), "rb") as f:
        hello = f.read()  # names Cam.Example.NET
    (ip, port), _, got = exchange(env, env.tls_port, hello)
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 12) + \
        socket.inet_aton(ip) + socket.inet_aton("127.0.0.1") + \
        struct.pack("!HH", port, env.tls_port)
    check_eq(got, header + hello, "bytes at the device")


CASES = [
    ("PROXY v1 line precedes the request, byte for byte", test_v1_header),
    ("PROXY v2 header precedes the request, byte for byte", test_v2_header),
    ("no header for a device with proxy_protocol off", test_no_header_when_off),
    ("PROXY v2 header precedes a TLS ClientHello", test_v2_before_tls_hello),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
