#!/usr/bin/python3
"""Connection limits, the file-descriptor limit and a slowloris drip, against
real ddport processes with small limits. Loopback only; every wait bounded."""

import http.client
import os
import resource
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{port}}}
proxy:
  timeouts: {{peek: {peek}, connect: 3s, idle: 1m, drain: 0s}}
  limits: {{{limits}}}
  allow_targets: [127.0.0.0/8]
  access_log: stderr
devices:
  demo.ddport.test: {{address: 127.0.0.1, ports: {{http: {backend}}}}}
"""

REQUEST = b"GET / HTTP/1.1\r\nHost: demo.ddport.test\r\n\r\n"


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.backend = ddtest.Backend()
    return env


def teardown(env):
    env.backend.stop()
    env.tmp.cleanup()


def start(env, limits, peek="10s", nofile=None, name="ddport"):
    port = ddtest.free_port(udp_too=False)
    config = ddtest.write_file(env.dir, name + ".yaml", CONFIG.format(
        port=port, peek=peek, limits=limits, backend=env.backend.port))
    d = ddtest.Ddport(config, env.dir, tcp_ports=[port], name=name)
    if nofile is not None:
        d.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    d.start()
    d.port = port
    # The readiness probe (a connect and close) counts until ddport has
    # seen it close; the limits below are exact, so wait for that.
    check(wait_logged(d, "result=client closed"), "readiness probe not logged")
    return d


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def status_of(sock):
    """Reads one whole response from sock (head and body); returns its
    status code, or None when the connection closed first."""
    resp = http.client.HTTPResponse(sock)
    try:
        resp.begin()
        resp.read()
    except (http.client.HTTPException, ConnectionError):
        return None
    return resp.status


def wait_logged(d, text, tries=50):
    """The access line is written when the connection is freed, after the
    refusal's linger: poll for it, bounded."""
    for _ in range(tries):
        if text in d.stderr_text():
            return True
        time.sleep(0.1)
    return False


def routed(port):
    with connect(port) as s:
        s.sendall(REQUEST)
        return status_of(s)


def wait_admitted(port, tries=50):
    """Polls until a new connection is routed (the limits have caught up
    with closed connections); bounded."""
    for _ in range(tries):
        if routed(port) == 200:
            return True
        time.sleep(0.1)
    return False


def stop(d):
    check_eq(d.stop(), 0, "ddport exit status after SIGTERM")


def test_per_source(env):
    d = start(env, "per_source: 3")
    try:
        idle = [connect(d.port) for _ in range(3)]
        time.sleep(0.3)
        with connect(d.port) as extra:
            check_eq(status_of(extra), 503, "status over per_source (log: %s)" % d.stderr_tail())
        idle.pop().close()
        check(wait_admitted(d.port), "no connection admitted after one closed")
        for s in idle:
            s.close()
        check(wait_logged(d, "result=limit per_source"), "access log names the limit")
    finally:
        stop(d)


def test_peeking(env):
    d = start(env, "peeking: 2")
    try:
        first, second = connect(d.port), connect(d.port)
        time.sleep(0.3)
        with connect(d.port) as extra:
            check_eq(status_of(extra), 503, "status over peeking")
        # A routed connection no longer counts as peeking.
        first.sendall(REQUEST)
        check_eq(status_of(first), 200, "the first request routed")
        check(wait_admitted(d.port), "no connection admitted after one routed")
        first.close()
        second.close()
    finally:
        stop(d)


def test_connections(env):
    d = start(env, "connections: 3")
    try:
        # Three open connections hold the limit, one of them relaying.
        held = [connect(d.port) for _ in range(3)]
        held[0].sendall(REQUEST)
        check_eq(status_of(held[0]), 200, "a routed connection")
        time.sleep(0.3)
        with connect(d.port) as extra:
            check_eq(status_of(extra), 503, "status over connections")
        # The held connections still work: the relaying one and an idle one.
        held[0].sendall(REQUEST)
        check_eq(status_of(held[0]), 200, "the relaying connection after the refusal")
        held[1].sendall(REQUEST)
        check_eq(status_of(held[1]), 200, "an idle connection after the refusal")
        for s in held:
            s.close()
        check(wait_admitted(d.port), "no connection admitted after they closed")
        check(wait_logged(d, "result=limit connections"), "access log names the limit")
    finally:
        stop(d)


def test_fd_limit(env):
    # 40 descriptors: a few for the loops, two per relayed connection. The
    # extra visitors are dropped by the kernel-side accept-and-close trick;
    # the established ones keep working and service recovers.
    d = start(env, "connections: 100000", nofile=40)
    try:
        held = []
        for _ in range(5):
            s = connect(d.port)
            s.sendall(REQUEST)
            check_eq(status_of(s), 200, "a routed connection before the flood")
            held.append(s)
        flood = []
        for _ in range(60):
            try:
                flood.append(connect(d.port))
            except OSError:
                break
        time.sleep(0.5)
        check(d.running(), "ddport died at the descriptor limit")
        for s in held:
            s.sendall(REQUEST)
            check_eq(status_of(s), 200, "an established connection at the limit")
        for s in flood + held:
            s.close()
        check(wait_admitted(d.port), "no recovery after the flood closed")
        # A worker that retries accept() at the limit spins and logs an
        # error per try; a paused listener logs one line per pause.
        log = d.stderr_text()
        check_eq(log.count("accept: too many open files"), 0, "accept errors logged")
        check(log.count("out of file descriptors") < 100,
              "%d pauses logged: the listener spun" % log.count("out of file descriptors"))
    finally:
        stop(d)


def test_slowloris(env):
    # One byte every 200 ms never completes the head before the 1 s
    # deadline: the proxy answers 408 and closes, however long we drip.
    d = start(env, "per_source: 256", peek="1s")
    try:
        with connect(d.port) as s:
            sent = 0
            closed = False
            for byte in REQUEST[:-2]:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                sent += 1
                time.sleep(0.2)
                s.setblocking(False)
                try:
                    if s.recv(1, socket.MSG_PEEK):
                        closed = True
                        break
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            check(closed, "the proxy waited for all %d dripped bytes" % sent)
            check(sent < len(REQUEST) - 2, "deadline not enforced")
            s.settimeout(5)
            try:
                status = status_of(s)
            except OSError:
                status = None
            check(status in (408, None), "expected 408 or a close, got %r" % status)
        check(wait_logged(d, "result=timeout"), "access log records the timeout")
    finally:
        stop(d)


CASES = [
    ("a source over limits.per_source gets 503, and recovers", test_per_source),
    ("over limits.peeking gets 503; routed ones stop counting", test_peeking),
    ("over limits.connections gets 503; held ones keep relaying", test_connections),
    ("at the descriptor limit established connections work and service recovers",
     test_fd_limit),
    ("a visitor dripping bytes is cut off at the peek deadline", test_slowloris),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
