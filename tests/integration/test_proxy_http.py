#!/usr/bin/python3
"""ddport's HTTP proxy, end to end: curl and raw sockets -> ddport serve ->
a Python backend playing the device. Loopback only."""

import os
import socket
import sys
import threading

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

DEMO = "demo.ddport.test"


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.backend = ddtest.Backend()
    try:  # a device reachable only over IPv6 (the DS-Lite case)
        env.backend6 = ddtest.Backend(host="::1")
        extra = '  v6.ddport.test: {address: "::1", ports: {http: %d}}\n' % env.backend6.port
    except OSError:
        env.backend6 = None
        extra = ""
    env.proxy_port = ddtest.free_port()
    env.dns_port = ddtest.free_port()
    env.dead_port = ddtest.free_port()  # nothing listens there
    env.config = ddtest.write_config(env.dir, env.proxy_port, env.dns_port,
                                     env.backend.port, env.dead_port, extra)
    env.ddport = ddtest.Ddport(env.config, env.dir, tcp_ports=[env.proxy_port],
                               udp_ports=[env.dns_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        if env.ddport.running():
            env.ddport.stop()
    finally:
        env.backend.stop()
        if env.backend6 is not None:
            env.backend6.stop()
        env.tmp.cleanup()


def proxy_url(env, path="/"):
    return "http://127.0.0.1:%d%s" % (env.proxy_port, path)


def curl_host(env, host, path="/", args=()):
    return ddtest.curl(env.dir, proxy_url(env, path), ["-H", "Host: " + host] + list(args))


def expect_page(env, res, what):
    check(res.rc == 0, "%s: %s" % (what, res.describe()))
    check_eq(res.status, 200, what + " status")
    check_eq(res.header(ddtest.BACKEND_HEADER), env.backend.token, what + " backend token header")
    check_eq(res.body, env.backend.page, what + " body")


# ---- routing by Host -------------------------------------------------------


def t_host_header(env):
    expect_page(env, curl_host(env, DEMO), "curl -H 'Host: %s'" % DEMO)


def t_resolve(env):
    url = "http://%s:%d/" % (DEMO, env.proxy_port)
    res = ddtest.curl(env.dir, url, ["--resolve", "%s:%d:127.0.0.1" % (DEMO, env.proxy_port)])
    expect_page(env, res, "curl --resolve %s" % url)


def t_host_case(env):
    expect_page(env, curl_host(env, "DEMO.DdPort.TEST"), "Host: DEMO.DdPort.TEST")


def t_host_trailing_dot(env):
    expect_page(env, curl_host(env, "DEMO.ddport.test."), "Host: DEMO.ddport.test.")


def t_host_with_port(env):
    host = "%s:%d" % (DEMO, env.proxy_port)
    expect_page(env, curl_host(env, host), "Host: " + host)


def t_host_dot_and_port(env):
    host = "demo.ddport.test.:%d" % env.proxy_port
    expect_page(env, curl_host(env, host), "Host: " + host)


def t_wildcard(env):
    expect_page(env, curl_host(env, "x.wild.ddport.test"), "Host: x.wild.ddport.test")


def t_wildcard_deep(env):
    expect_page(env, curl_host(env, "a.b.wild.ddport.test"), "Host: a.b.wild.ddport.test")


def t_wildcard_not_apex(env):
    # "*.wild.ddport.test" covers names below wild.ddport.test, not the name itself.
    res = curl_host(env, "wild.ddport.test")
    check(res.rc == 0, res.describe())
    check_eq(res.status, 404, "Host: wild.ddport.test status")
    check(res.header(ddtest.BACKEND_HEADER) is None, "the 404 came from the backend, not ddport")


def t_absolute_form(env):
    # DESIGN: the absolute-form request target wins over the Host header.
    req = (b"GET http://demo.ddport.test/ HTTP/1.1\r\nHost: nosuch.ddport.test\r\n"
           b"Connection: close\r\n\r\n")
    resp = ddtest.raw_exchange(env.proxy_port, req)
    check_eq(resp.status, 200, "absolute-form status")
    check_eq(resp.body, env.backend.page, "absolute-form body")


# ---- bodies ------------------------------------------------------------------


def t_big(env):
    res = curl_host(env, DEMO, "/big")
    check(res.rc == 0, "GET /big: " + res.describe())
    check_eq(res.status, 200, "GET /big status")
    body = res.body
    check_eq(len(body), ddtest.BIG_SIZE, "GET /big length")
    check_eq(ddtest.sha256(body), ddtest.sha256(ddtest.big_body()), "GET /big sha256")


def t_post(env):
    data = os.urandom(1024 * 1024 + 17)
    path = os.path.join(env.dir, "post.bin")
    with open(path, "wb") as f:
        f.write(data)
    res = curl_host(env, DEMO, "/post", ["--data-binary", "@" + path,
                                         "-H", "Content-Type: application/octet-stream"])
    check(res.rc == 0, "POST 1 MiB: " + res.describe())
    check_eq(res.status, 200, "POST status")
    body = res.body
    check_eq(len(body), len(data), "POST echo length")
    check_eq(ddtest.sha256(body), ddtest.sha256(data), "POST echo sha256")


# ---- the request reaches the device unchanged ------------------------------


def t_echo_raw(env):
    req = (b"GET /echo?a=1&b=%20x HTTP/1.1\r\n"
           b"Host: demo.ddport.test\r\n"
           b"x-lower-case: Value With  Two Spaces\r\n"
           b"X-Ddtest-Order: 1\r\n"
           b"User-Agent: ddtest/1.0 (raw)\r\n"
           b"Accept: */*\r\n"
           b"X-Ddtest-Order: 2\r\n"
           b"Connection: close\r\n\r\n")
    resp = ddtest.raw_exchange(env.proxy_port, req)
    check_eq(resp.status, 200, "GET /echo status")
    check_eq(resp.body, req, "request head as the backend received it")


def t_echo_curl(env):
    res = curl_host(env, DEMO, "/echo", ["-H", "X-Ddtest-Custom: hello proxy",
                                         "-A", "ddtest-curl/1"])
    check(res.rc == 0, res.describe())
    check_eq(res.status, 200, "GET /echo status")
    lines = res.body.decode("latin-1").split("\r\n")
    check_eq(lines[0], "GET /echo HTTP/1.1", "request line at the backend")
    for want in ("Host: " + DEMO, "X-Ddtest-Custom: hello proxy", "User-Agent: ddtest-curl/1"):
        check(want in lines, "backend did not see header %r; it saw %r" % (want, lines))


# ---- raw-socket shapes ---------------------------------------------------------


def t_bytewise(env):
    req = b"GET / HTTP/1.1\r\nHost: demo.ddport.test\r\nConnection: close\r\n\r\n"
    resp = ddtest.raw_exchange(env.proxy_port, req, bytewise=True)
    check_eq(resp.status, 200, "1-byte writes status")
    check_eq(resp.body, env.backend.page, "1-byte writes body")


def t_keepalive(env):
    req1 = b"GET / HTTP/1.1\r\nHost: demo.ddport.test\r\n\r\n"
    req2 = b"GET /echo HTTP/1.1\r\nHost: demo.ddport.test\r\nX-Second: yes\r\n\r\n"
    with ddtest.RawConn(env.proxy_port) as conn:
        conn.send(req1)
        r1 = conn.read_response()
        check_eq(r1.status, 200, "first request status")
        check_eq(r1.body, env.backend.page, "first request body")
        check(not conn.eof, "connection closed after the first keep-alive request")
        conn.send(req2)
        r2 = conn.read_response()
        check_eq(r2.status, 200, "second request status")
        check_eq(r2.body, req2, "second request as the backend received it")


def t_pipelined(env):
    # Both requests in one write: the peeked bytes must reach the device whole.
    req1 = b"GET /echo HTTP/1.1\r\nHost: demo.ddport.test\r\nX-N: 1\r\n\r\n"
    req2 = b"GET /echo HTTP/1.1\r\nHost: demo.ddport.test\r\nX-N: 2\r\nConnection: close\r\n\r\n"
    with ddtest.RawConn(env.proxy_port) as conn:
        conn.send(req1 + req2)
        r1 = conn.read_response()
        r2 = conn.read_response()
    check_eq((r1.status, r2.status), (200, 200), "pipelined statuses")
    check_eq(r1.body, req1, "first pipelined request at the backend")
    check_eq(r2.body, req2, "second pipelined request at the backend")


def expect_400(env, req, what):
    with ddtest.RawConn(env.proxy_port) as conn:
        conn.send(req)
        resp = conn.read_response()
        check_eq(resp.status, 400, what + " status")
        check(resp.header(ddtest.BACKEND_HEADER) is None, what + ": the request reached the backend")


def t_host_space_colon(env):
    expect_400(env, b"GET / HTTP/1.1\r\nHost : demo.ddport.test\r\n\r\n", "'Host :'")


def t_host_space_inside(env):
    expect_400(env, b"GET / HTTP/1.1\r\nHo st: demo.ddport.test\r\n\r\n", "'Ho st:'")


def t_duplicate_host(env):
    expect_400(env, b"GET / HTTP/1.1\r\nHost: demo.ddport.test\r\nHost: demo.ddport.test\r\n\r\n",
               "duplicate Host")


def t_no_host(env):
    expect_400(env, b"GET / HTTP/1.1\r\nUser-Agent: ddtest\r\nAccept: */*\r\n\r\n", "no Host")


def t_ipv6_device(env):
    if env.backend6 is None:
        raise ddtest.Skip("cannot bind ::1")
    res = curl_host(env, "v6.ddport.test")
    check(res.rc == 0, "Host: v6.ddport.test: " + res.describe())
    check_eq(res.status, 200, "IPv4 visitor to IPv6 device status")
    check_eq(res.body, env.backend6.page, "IPv4 visitor to IPv6 device body")


def t_half_close(env):
    # The visitor sends its request and shuts down its sending side; the
    # response must still come back.
    req = b"GET / HTTP/1.1\r\nHost: demo.ddport.test\r\nConnection: close\r\n\r\n"
    with ddtest.RawConn(env.proxy_port) as conn:
        conn.send(req)
        conn.sock.shutdown(socket.SHUT_WR)
        resp = conn.read_response()
    check_eq(resp.status, 200, "status after client half-close")
    check_eq(resp.body, env.backend.page, "body after client half-close")


def t_bad_host_chars(env):
    expect_400(env, b"GET / HTTP/1.1\r\nHost: demo_x.ddport.test\r\n\r\n", "Host with '_'")


def t_oversized_head(env):
    marker = b"X-Ddtest-Oversized"
    head = b"GET / HTTP/1.1\r\nHost: demo.ddport.test\r\n"
    pad = b"".join(b"%s-%d: %s\r\n" % (marker, i, b"a" * 1000) for i in range(64))
    status = None
    with ddtest.RawConn(env.proxy_port, timeout=15) as conn:
        try:
            conn.send(head + pad)  # 64 KiB and the head never ends
        except OSError:
            pass  # ddport may stop reading and close early
        try:
            status = conn.read_response(overall=30).status
        except (ddtest.Failure, OSError):
            status = None  # closed or reset without a response
        check(conn.eof or conn.wait_closed(overall=30),
              "ddport keeps the connection with an oversized head open")
    check(status in (None, 400, 431), "oversized request head answered with %s" % status)
    check(not any(marker in h for h in env.backend.heads),
          "an oversized request head was forwarded to the device")


def t_slow_head(env):
    # peek timeout is 5s in the config: a head that never completes is cut off.
    with ddtest.RawConn(env.proxy_port, timeout=40) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: demo")
        try:
            resp = conn.read_response(overall=40)
        except ddtest.Failure as exc:
            check(conn.eof and not conn.buf, "after the peek timeout: %s" % exc)
        else:
            check_eq(resp.status, 408, "status for an unfinished request head")
            check(conn.wait_closed(overall=10), "connection left open after 408")


def t_concurrent(env):
    n = 16
    results = [None] * n
    req = b"GET / HTTP/1.1\r\nHost: demo.ddport.test\r\nConnection: close\r\n\r\n"

    def one(i):
        try:
            r = ddtest.raw_exchange(env.proxy_port, req)
            results[i] = (r.status, r.body == env.backend.page)
        except Exception as exc:  # reported below
            results[i] = repr(exc)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    bad = [(i, r) for i, r in enumerate(results) if r != (200, True)]
    check(not bad, "%d of %d concurrent requests failed: %s" % (len(bad), n, bad[:4]))


# ---- errors from ddport ------------------------------------------------------


def t_unknown_host(env):
    res = curl_host(env, "nosuch.ddport.test")
    check(res.rc == 0, res.describe())
    check_eq(res.status, 404, "unknown host status")
    conn_hdr = (res.header("Connection") or "").lower()
    check_eq(conn_hdr, "close", "Connection header of the 404")
    check(res.header(ddtest.BACKEND_HEADER) is None, "404 came from the backend")
    # and ddport really closes the connection after the page
    with ddtest.RawConn(env.proxy_port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: nosuch.ddport.test\r\n\r\n")
        resp = conn.read_response()
        check_eq(resp.status, 404, "raw unknown host status")
        check(conn.wait_closed(), "ddport kept the connection open after 404 with Connection: close")


def t_offline(env):
    res = curl_host(env, "off.ddport.test")
    check(res.rc == 0, res.describe())
    check_eq(res.status, 502, "device without listener status")
    check("offline" in res.body.decode("utf-8", "replace").lower(),
          "502 body does not mention 'offline': %r" % res.body[:300])


def t_backend_stopped(env):
    expect_page(env, curl_host(env, DEMO), "before stopping the backend")
    env.backend.stop()
    res = curl_host(env, DEMO)
    check(res.rc == 0, res.describe())
    check_eq(res.status, 502, "status once the backend is gone")
    check("offline" in res.body.decode("utf-8", "replace").lower(),
          "502 body does not mention 'offline': %r" % res.body[:300])


def t_still_running(env):
    check(env.ddport.running(), "ddport exited during the tests (status %s); stderr: %s"
          % (env.ddport.proc.returncode, env.ddport.stderr_tail()))


def t_sigterm(env):
    # With an idle keep-alive connection still open (through the IPv6 device,
    # whose backend is still up), SIGTERM drains and exits 0.
    conn = None
    try:
        if env.backend6 is not None:
            conn = ddtest.RawConn(env.proxy_port, timeout=70)
            conn.send(b"GET / HTTP/1.1\r\nHost: v6.ddport.test\r\n\r\n")
            check_eq(conn.read_response().status, 200, "keep-alive request before SIGTERM")
        rc = env.ddport.stop(timeout=60)
        check(rc is not None, "ddport did not exit within 60 s of SIGTERM (killed)")
        check_eq(rc, 0, "exit status after SIGTERM")
        if conn is not None:
            check(conn.wait_closed(overall=5), "idle connection still open after ddport exited")
    finally:
        if conn is not None:
            conn.close()


CASES = [
    ("GET / with Host header routes to the device", t_host_header),
    ("GET / with curl --resolve routes to the device", t_resolve),
    ("Host in mixed case routes", t_host_case),
    ("Host with trailing dot routes", t_host_trailing_dot),
    ("Host with port routes", t_host_with_port),
    ("Host with trailing dot and port routes", t_host_dot_and_port),
    ("wildcard device routes x.wild.ddport.test", t_wildcard),
    ("wildcard device routes a.b.wild.ddport.test", t_wildcard_deep),
    ("wildcard does not cover its own apex (404)", t_wildcard_not_apex),
    ("absolute-form target wins over Host", t_absolute_form),
    ("10 MiB body arrives unchanged", t_big),
    ("1 MiB POST body round-trips", t_post),
    ("backend receives the request head byte for byte", t_echo_raw),
    ("backend sees the headers curl sent", t_echo_curl),
    ("request sent in 1-byte writes routes", t_bytewise),
    ("two requests on one keep-alive connection", t_keepalive),
    ("two pipelined requests in one write", t_pipelined),
    ("'Host :' is rejected with 400", t_host_space_colon),
    ("'Ho st:' is rejected with 400", t_host_space_inside),
    ("duplicate Host is rejected with 400", t_duplicate_host),
    ("request without Host is rejected with 400", t_no_host),
    ("Host with '_' is rejected with 400", t_bad_host_chars),
    ("IPv4 visitor reaches an IPv6-only device", t_ipv6_device),
    ("client half-close still gets the response", t_half_close),
    ("16 concurrent connections all routed", t_concurrent),
    ("oversized request head is refused, not forwarded", t_oversized_head),
    ("unfinished request head is cut off after the peek timeout", t_slow_head),
    ("unknown host gets 404 with Connection: close", t_unknown_host),
    ("device port without listener gets 502 offline", t_offline),
    ("ddport still running after the cases above", t_still_running),
    ("backend stopped: new request gets 502", t_backend_stopped),
    ("SIGTERM: ddport exits 0", t_sigterm),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
