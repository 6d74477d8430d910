#!/usr/bin/python3
"""Live reload of `listeners:` against a real `ddport serve` with two
workers: a listener added by a reload accepts at once and routes devices by
the port they have for its name; a removed one stops accepting while a
transfer in flight on it finishes byte for byte; a moved one serves at its
new address only; a changed fallback applies in place; and a reload whose
new address is taken keeps the old listener set whole, logs why, and
applies once the address is free; and ten such reloads under a stream of
requests lose none."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402
from test_reload import WAIT_S, RequestStream, Server, setup, teardown  # noqa: E402

CONFIG = """\
workers: 2
listeners:
{listeners}
proxy:
  timeouts: {{peek: 5s, connect: 5s, idle: 5m, drain: 10s}}
  allow_targets: [127.0.0.0/8]
  access_log: {access_log}
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - {{name: ddport.test, proxy: [127.0.0.1]}}
reload: {{watch: off}}
registry: [devices.d/]
devices:
{devices}
"""


def listener(name, port, fallback=None):
    extra = ", fallback: %s" % fallback if fallback else ""
    return "  - {name: %s, protocol: http, address: 127.0.0.1:%d%s}" % (name, port, extra)


def device(name, ports):
    return "  %s: {address: 127.0.0.1, ports: {%s}}" % (
        name, ", ".join("%s: %d" % kv for kv in sorted(ports.items())))


class ListenerServer(Server):
    """A Server whose config is rewritten from listeners and devices."""

    def __init__(self, env):
        super().__init__(env, watch=False)
        self.access_log = os.path.join(self.dir, "access.log")

    def configure(self, listeners, devices):
        self.write_config(CONFIG.format(listeners="\n".join(listeners),
                                        devices="\n".join(devices),
                                        dns_port=self.dns_port,
                                        access_log=self.access_log))

    def get_via(self, port, host, path="/"):
        return ddtest.curl(self.dir, "http://127.0.0.1:%d%s" % (port, path),
                           ["-H", "Host: " + host], timeout=30)

    def routes_via(self, port, host, backend):
        res = self.get_via(port, host)
        check_eq(res.status, 200, "GET %s via port %d: %s" % (host, port, res.describe()))
        check_eq(res.header(ddtest.BACKEND_HEADER), backend.token,
                 "the device behind %s via port %d" % (host, port))

    def wait_closed_port(self, port, what):
        """Waits (bounded) until nothing accepts on port any more."""
        deadline = time.monotonic() + WAIT_S
        while ddtest.tcp_answers(port):
            check(time.monotonic() < deadline, "port %d still accepts after %s; log: %s"
                  % (port, what, self.stderr_tail()))
            time.sleep(0.05)

    def stderr_tail(self, lines=10):
        return self.proc.stderr_tail(lines)


def start_big(port, host):
    """A GET /big whose head has arrived; the body is read later, slowly."""
    big = ddtest.RawConn(port, timeout=30)
    big.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    big.send(("GET /big HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode())
    deadline = time.monotonic() + WAIT_S
    while b"\r\n\r\n" not in big.buf:
        check(big._fill(deadline), "the big response started")
    return big


def finish_big(big, what):
    resp = big.read_response(overall=60)
    big.close()
    check_eq(resp.status, 200, "status of the transfer %s" % what)
    check_eq(len(resp.body), ddtest.BIG_SIZE, "length of the transfer %s" % what)
    check_eq(ddtest.sha256(resp.body), ddtest.sha256(ddtest.big_body()),
             "sha256 of the transfer %s" % what)


def t_added_listener_routes(env):
    s = ListenerServer(env)
    alt = ddtest.free_port()
    s.configure([listener("http", s.proxy_port)],
                [device("demo.ddport.test", {"http": env.backend.port})])
    with s:
        check(not ddtest.tcp_answers(alt), "the new port is free before the reload")
        s.configure([listener("http", s.proxy_port), listener("alt", alt)],
                    [device("demo.ddport.test", {"http": env.backend.port, "alt": env.other.port})])
        s.sighup()
        log = s.proc.stderr_text()
        check("listener alt on 127.0.0.1:%d: added" % alt in log,
              "the added listener logged; log: %s" % s.stderr_tail())
        check("2 listeners in force (1 added, 0 removed, 0 changed)" in log,
              "the change counted; log: %s" % s.stderr_tail())
        check("needs a restart" not in log, "listeners need no restart; log: %s" % s.stderr_tail())
        # Every connection on the new port: each worker has its socket.
        for _ in range(6):
            s.routes_via(alt, "demo.ddport.test", env.other)
        s.routes_via(s.proxy_port, "demo.ddport.test", env.backend)


def answers_v6(port):
    try:
        socket.create_connection(("::1", port), timeout=2).close()
        return True
    except OSError:
        return False


def t_dual_stack_listener(env):
    """One listener on an IPv4 and an IPv6 address routes visitors of
    both by the device's one port for it; a reload that drops the IPv6
    address closes that socket and keeps the IPv4 one."""
    s = ListenerServer(env)
    port = s.proxy_port
    both = ("  - {name: http, protocol: http, address: [127.0.0.1:%d, \"[::1]:%d\"]}"
            % (port, port))
    devices = [device("demo.ddport.test", {"http": env.backend.port})]
    s.configure([both], devices)
    with s:
        s.routes_via(port, "demo.ddport.test", env.backend)
        res = ddtest.curl(s.dir, "http://[::1]:%d/" % port, ["-H", "Host: demo.ddport.test"],
                          timeout=30)
        check_eq(res.status, 200, "GET over IPv6: %s" % res.describe())
        check_eq(res.header(ddtest.BACKEND_HEADER), env.backend.token, "the device over IPv6")
        s.configure([listener("http", port)], devices)
        s.sighup()
        log = s.proc.stderr_text()
        check("listener http on [::1]:%d: removed" % port in log,
              "the IPv6 address's removal logged; log: %s" % s.stderr_tail())
        deadline = time.monotonic() + WAIT_S
        while answers_v6(port):
            check(time.monotonic() < deadline, "[::1]:%d still accepts; log: %s"
                  % (port, s.stderr_tail()))
            time.sleep(0.05)
        s.routes_via(port, "demo.ddport.test", env.backend)


def t_removed_listener_finishes_transfer(env):
    s = ListenerServer(env)
    alt = ddtest.free_port()
    ports = {"http": env.backend.port, "alt": env.backend.port}
    s.configure([listener("http", s.proxy_port), listener("alt", alt)],
                [device("demo.ddport.test", ports)])
    with s:
        big = start_big(alt, "demo.ddport.test")
        s.configure([listener("http", s.proxy_port)],
                    [device("demo.ddport.test", {"http": env.backend.port})])
        s.sighup()
        check("listener alt on 127.0.0.1:%d: removed; its connections finish" % alt
              in s.proc.stderr_text(), "the removal logged; log: %s" % s.stderr_tail())
        s.wait_closed_port(alt, "its removal")
        check(not big.eof, "the transfer on the removed listener is still in flight")
        finish_big(big, "on the removed listener")
        s.routes_via(s.proxy_port, "demo.ddport.test", env.backend)
        # The connection kept its listener's name to the end.
        deadline = time.monotonic() + WAIT_S
        while "listener=alt " not in open(s.access_log, encoding="utf-8").read():
            check(time.monotonic() < deadline, "no access line for the removed listener")
            time.sleep(0.05)


def t_moved_and_changed_listener(env):
    s = ListenerServer(env)
    moved = ddtest.free_port()
    s.configure([listener("http", s.proxy_port)],
                [device("demo.ddport.test", {"http": env.backend.port}),
                 device("other.ddport.test", {"http": env.other.port})])
    with s:
        # A fallback added in place: the socket stays, connections queued or
        # open on it carry on, unknown names go to the fallback.
        check_eq(s.get_via(s.proxy_port, "nobody.ddport.test").status, 404, "before the fallback")
        kept = ddtest.RawConn(s.proxy_port)
        kept.send(b"GET / HTTP/1.1\r\nHost: other.ddport.test\r\n\r\n")
        check_eq(kept.read_response().status, 200, "a keep-alive request before the change")
        s.configure([listener("http", s.proxy_port, fallback="other.ddport.test")],
                    [device("demo.ddport.test", {"http": env.backend.port}),
                     device("other.ddport.test", {"http": env.other.port})])
        s.sighup()
        check("(0 added, 0 removed, 1 changed)" in s.proc.stderr_text(),
              "the fallback counted as a change; log: %s" % s.stderr_tail())
        for _ in range(4):
            s.routes_via(s.proxy_port, "nobody.ddport.test", env.other)
        kept.send(b"GET / HTTP/1.1\r\nHost: other.ddport.test\r\n\r\n")
        resp = kept.read_response()
        kept.close()
        check_eq(resp.header(ddtest.BACKEND_HEADER), env.other.token,
                 "the keep-alive connection accepted before the change")

        # The same listener at a new address.
        big = start_big(s.proxy_port, "demo.ddport.test")
        s.configure([listener("http", moved, fallback="other.ddport.test")],
                    [device("demo.ddport.test", {"http": env.backend.port}),
                     device("other.ddport.test", {"http": env.other.port})])
        s.sighup()
        check("(1 added, 1 removed, 0 changed)" in s.proc.stderr_text(),
              "the move counted; log: %s" % s.stderr_tail())
        s.wait_closed_port(s.proxy_port, "the move")
        for _ in range(4):
            s.routes_via(moved, "demo.ddport.test", env.backend)
        finish_big(big, "on the old address")


def address_in_use_keeps_old_set(env, reuseport):
    s = ListenerServer(env)
    busy = ddtest.free_port()
    base = [device("other.ddport.test", {"http": env.other.port})]
    s.configure([listener("http", s.proxy_port)],
                base + [device("demo.ddport.test", {"http": env.backend.port})])
    with s:
        squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if reuseport:
                # As another ddport's socket would be: ddport's own would
                # join it and share its connections.
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            squatter.bind(("127.0.0.1", busy))
            squatter.listen(1)
            # Two listener changes and a device in one reload: the listener
            # half is refused whole, the device applies.
            s.configure([listener("http", s.proxy_port, fallback="other.ddport.test"),
                         listener("busy", busy)],
                        base + [device("demo.ddport.test", {"http": env.backend.port,
                                                            "busy": env.backend.port}),
                                device("new.ddport.test", {"http": env.other.port})])
            s.sighup()
            log = s.proc.stderr_text()
            check("listener busy: cannot listen on 127.0.0.1:%d: address already in use "
                  "(by another process)" % busy in log,
                  "the busy address logged; log: %s" % s.stderr_tail())
            check("listeners not changed (address already in use); the 1 listeners in force "
                  "keep serving" in log, "the refusal logged; log: %s" % s.stderr_tail())
            check(" listeners in force (" not in log, "no listener change applied")
            s.routes_via(s.proxy_port, "new.ddport.test", env.other)
            check_eq(s.get_via(s.proxy_port, "nobody.ddport.test").status, 404,
                     "the refused fallback is not in force")
            s.routes_via(s.proxy_port, "demo.ddport.test", env.backend)
        finally:
            squatter.close()

        # Once the address is free, the same files apply.
        s.sighup()
        check("2 listeners in force (1 added, 0 removed, 1 changed)" in s.proc.stderr_text(),
              "the change applied once the address is free; log: %s" % s.stderr_tail())
        s.routes_via(busy, "demo.ddport.test", env.backend)
        s.routes_via(s.proxy_port, "nobody.ddport.test", env.other)


def t_address_in_use_keeps_old_set(env):
    address_in_use_keeps_old_set(env, reuseport=False)


def t_address_shared_by_reuseport_refused(env):
    address_in_use_keeps_old_set(env, reuseport=True)


def t_churn_under_traffic(env):
    """Ten reloads, each changing the busy listener in place (its socket
    handed to a successor) and adding or removing another, while requests
    stream in back to back: not one fails."""
    s = ListenerServer(env)
    alt = ddtest.free_port()
    devices = [device("demo.ddport.test", {"http": env.backend.port}),
               device("other.ddport.test", {"http": env.other.port})]
    s.configure([listener("http", s.proxy_port)], devices)
    with s:
        requests = RequestStream(s.proxy_port, "other.ddport.test", env.other.token)
        requests.start()
        try:
            for i in range(10):
                fallback = "demo.ddport.test" if i % 2 == 0 else "other.ddport.test"
                listeners = [listener("http", s.proxy_port, fallback=fallback)]
                if i % 2 == 0:
                    listeners.append(listener("alt", alt))
                s.configure(listeners, devices)
                s.sighup()
                for _ in range(500):
                    if requests.ok > (i + 1) * 5:
                        break
                    time.sleep(0.01)
        finally:
            requests.stop_flag.set()
            requests.join(timeout=60)
        check_eq(requests.errors, [], "failed requests during listener reloads (%d ok)"
                 % requests.ok)
        check(requests.ok >= 10, "traffic flowed: %d requests" % requests.ok)
        check_eq(s.log_count(" listeners in force ("), 10, "listener changes applied")
        s.wait_closed_port(alt, "the last reload removed it")
        s.routes_via(s.proxy_port, "nobody.ddport.test", env.other)


CASES = [
    ("an added listener accepts and routes by its name's port", t_added_listener_routes),
    ("one listener on IPv4 and IPv6; a reload drops one address", t_dual_stack_listener),
    ("a removed listener stops accepting; its transfer finishes", t_removed_listener_finishes_transfer),
    ("a listener changed in place and moved to a new address", t_moved_and_changed_listener),
    ("a new address in use: the old listener set stays whole", t_address_in_use_keeps_old_set),
    ("a new address held with SO_REUSEPORT is in use too", t_address_shared_by_reuseport_refused),
    ("listener reloads under live traffic lose no request", t_churn_under_traffic),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
