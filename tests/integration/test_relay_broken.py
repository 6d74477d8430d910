#!/usr/bin/python3
"""Streams that break without a reset on the wire reach the other side as
a reset all the same, never as a FIN that would pass them off as complete:
a device that stops answering in the middle of an upload (ddport's
retransmissions time out: ETIMEDOUT), and a visitor that resets while
ddport is still connecting to the device.

Isolation. setup() moves this whole test process, before it starts any
thread, into a network namespace of its own (ddtest.enter_private_network)
holding only a loopback interface; ddport and the devices live there too.
The vanishing device listens on 10.77.0.2, an address only that loopback
carries; removing it is the device going away: what ddport sends it then
goes nowhere. net.ipv4.tcp_retries2, which is per namespace, is lowered
there so that retransmissions time out within seconds instead of the
quarter of an hour of the default. Without a namespace (no CAP_SYS_ADMIN)
that case is skipped with the reason, and the other runs on the host's
loopback. Every wait bounded."""

import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
import test_relay  # noqa: E402
from ddtest import check, check_eq  # noqa: E402
from test_relay import MIB, connect, head, how_it_ends, n_lines, pattern  # noqa: E402

DEVICE_ADDR = "10.77.0.2"  # on the namespace's loopback only
TCP_RETRIES2 = "2"  # unanswered retransmissions time out after about 1.5 s

# connect is long: the visitor's case holds ddport stopped while its
# connection to the device completes.
CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{port}}}
proxy:
  timeouts: {{peek: 3s, connect: 30s, idle: 1m}}
  allow_targets: [{device_addr}/32, 127.0.0.1/32]
  access_log: {log}
devices:
  dev.ddport.test: {{address: {device_addr}, ports: {{http: {device}}}}}
  slow.ddport.test: {{address: 127.0.0.1, ports: {{http: {slow}}}}}
"""


class Device(test_relay.Device):
    """test_relay's device, with /ready/N: reads N bytes after the head,
    says "ready", then waits to be told (go) before it closes."""

    def _ready(self, conn, parts, rest):
        got = len(rest)
        while got < int(parts[2]):
            chunk = conn.recv(65536)
            if not chunk:
                return
            got += len(chunk)
        conn.sendall(b"ready")
        self._told("/" + "/".join(parts[1:]))


class Env:
    pass


def ip(*args):
    proc = ddtest.run([ddtest.IP] + list(args), timeout=20)
    check(proc.returncode == 0, "ip %s: %s" % (" ".join(args), proc.stderr.strip()))


def setup():
    ddtest.require_binary()
    env = Env()
    # First, before any thread or child exists: see the docstring.
    env.no_netns = ddtest.enter_private_network([DEVICE_ADDR + "/32"])
    if env.no_netns is None:
        with open("/proc/sys/net/ipv4/tcp_retries2", "w") as f:
            f.write(TCP_RETRIES2)
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.device = Device(host=DEVICE_ADDR if env.no_netns is None else ddtest.LOOPBACK4)
    # A device whose accept queue (backlog 0: one connection) a test fills,
    # so that its kernel drops ddport's SYN until the test makes room.
    env.slow = socket.socket()
    env.slow.bind((ddtest.LOOPBACK4, 0))
    env.slow.listen(0)
    env.slow.settimeout(20)
    env.ddport = ddtest.started(env, teardown, lambda: start(env))
    return env


def start(env):
    port = ddtest.free_port(udp_too=False)
    log = os.path.join(env.dir, "access.log")
    config = ddtest.write_file(env.dir, "ddport.yaml", CONFIG.format(
        port=port, log=log, device_addr=env.device.sock.getsockname()[0],
        device=env.device.port, slow=env.slow.getsockname()[1]))
    d = ddtest.Ddport(config, env.dir, tcp_ports=[port]).start()
    d.port = port
    d.log = log
    return d


def teardown(env):
    try:
        if hasattr(env, "ddport"):  # not when it failed to start
            ddtest.stop_checked(env.ddport)
    finally:
        env.device.stop()
        env.slow.close()
        env.tmp.cleanup()


def test_device_stops_answering(env):
    # The visitor's first MiB reaches the device (and moves the relay to
    # splice(2) where that is on); then the device goes away and ddport's
    # retransmissions of the next bytes time out. The visitor must be
    # reset: its upload did not all arrive.
    if env.no_netns:
        raise ddtest.Skip("needs a private network namespace: %s" % env.no_netns)
    before = n_lines(env.ddport)
    path = "/ready/%d" % MIB
    s = connect(env.ddport.port)
    s.settimeout(20)
    s.sendall(head(path) + pattern(MIB, 31))
    check_eq(s.recv(5), b"ready", "the device's answer")
    ip("addr", "del", DEVICE_ADDR + "/32", "dev", "lo")
    try:
        s.sendall(b"lost on the way")
        how = how_it_ends(s, timeout=60)
    finally:
        ip("addr", "add", DEVICE_ADDR + "/32", "dev", "lo")
        env.device.go(path)
    s.close()
    check_eq(how, "reset", "how the connection ended at the visitor")
    test_relay.check_reset_logged(env, before)


def connecting_to(port, tries=200):
    """Whether a socket here is in SYN-SENT towards port (within tries
    twentieths of a second)."""
    for _ in range(tries):
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "02" and int(fields[2].split(":")[1], 16) == port:
                    return True
        time.sleep(0.05)
    return False


def test_visitor_resets_while_connecting(env):
    # The device's kernel drops ddport's SYN (its accept queue is full)
    # and takes the next one, a second later. Meanwhile ddport is stopped
    # and the visitor resets, so ddport, resumed, learns of the visitor's
    # reset before it learns that the device has connected. The device
    # must be reset: a FIN would end an empty stream as if complete.
    before = n_lines(env.ddport)
    slow_port = env.slow.getsockname()[1]
    filler = socket.create_connection((ddtest.LOOPBACK4, slow_port), timeout=10)
    device = None
    try:
        s = connect(env.ddport.port)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: slow.ddport.test\r\n\r\n")
        check(connecting_to(slow_port), "ddport did not start connecting to the device")
        test_relay.stopped(env.ddport)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            env.slow.accept()[0].close()  # the filler's place
            device, _ = env.slow.accept()
        finally:
            test_relay.resumed(env.ddport)
        how = how_it_ends(device)
    finally:
        filler.close()
        if device is not None:
            device.close()
    check_eq(how, "reset", "how the connection ended at the device")
    test_relay.check_reset_logged(env, before, name="slow.ddport.test")


CASES = [
    ("a device that stops answering mid-upload: the visitor is reset",
     test_device_stops_answering),
    ("a visitor's reset while ddport connects: the device is reset",
     test_visitor_resets_while_connecting),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
