#!/usr/bin/python3
"""The dyndns2 update endpoint against a real `ddport serve`: every reply
code, the change reaching the proxy and DNS, the journal across restarts,
admin edits taking precedence, HTTPS with a certificate reloaded on SIGHUP,
and the limits (request size, slow requests, connections, updates per
minute, bad credentials slowed down)."""

import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

CONFIG = """\
workers: 2
state_dir: {state}
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{proxy_port}}}
  - {{name: https, protocol: tls, address: 127.0.0.1:{tls_port}}}
proxy:
  allow_targets: [127.0.0.0/8]
  access_log: off
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - {{name: ddport.test, proxy: [127.0.0.1]}}
update:
  listen: [127.0.0.1:{update_port}]
  tls: {{cert: update.crt, key: update.key, listen: [127.0.0.1:{update_tls_port}]}}
  timeouts: {{request: 1500ms, idle: 3s}}
  limits: {{connections: 8, updates_per_minute: {per_minute}}}
  max_request: 2KiB
reload: {{watch: false}}
accounts:
  alice: {{secret: "{alice_hash}"}}
  bob: {{secret: "{bob_hash}"}}
devices:
  cam.ddport.test: {{owner: alice, address: 127.0.0.1, ports: {{http: {dead_port}}}}}
  nas.ddport.test: {{owner: alice, address: 127.0.0.1, ports: {{http: {dead_port}, https: {dead_port}}}}}
  bobs.ddport.test: {{owner: bob, address: 127.0.0.1, ports: {{http: {dead_port}}}}}
  burst.ddport.test: {{owner: alice, address: 127.0.0.1, ports: {{http: {dead_port}}}}}
  offline.ddport.test: {{owner: alice, address: 127.0.0.1, ports: {{http: {dead_port}}}}}
  admin.ddport.test: {{owner: alice, address: 127.0.0.1, ports: {{http: {dead_port}}}}}
{extra}"""

ALICE = "alice-s3cret:with:colons"
BOB = "bob-secret"
UA = "ddtest/1.0"
WAIT_S = 10


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.backend = ddtest.Backend()
    env.other = ddtest.Backend()
    env.ports = dict(proxy_port=ddtest.free_port(), tls_port=ddtest.free_port(),
                     dns_port=ddtest.free_port(), update_port=ddtest.free_port(),
                     update_tls_port=ddtest.free_port(), dead_port=ddtest.free_port(),
                     per_minute=5)
    env.hashes = dict(alice_hash=ddtest.hash_secret(ALICE), bob_hash=ddtest.hash_secret(BOB))
    ddtest.make_cert(env.dir, "update", "update.ddport.test")
    env.proc = None
    env.n = 0
    return env


def teardown(env):
    status = env.proc.stop() if env.proc else 0
    env.backend.stop()
    env.other.stop()
    tail = env.proc.stderr_tail(20) if env.proc else ""
    env.tmp.cleanup()
    check_eq(status, 0, "exit status of the last ddport (stderr: %s)" % tail)


def write_config(env, extra=""):
    text = CONFIG.format(state=os.path.join(env.dir, "state"), extra=extra,
                         **env.ports, **env.hashes)
    ddtest.write_file(env.dir, "ddport.yaml", text)
    return os.path.join(env.dir, "ddport.yaml")


def start(env, fresh_state=True, extra=""):
    """A ddport with a fresh journal (or the one left by the last run)."""
    if env.proc:
        check_eq(env.proc.stop(), 0, "exit status of the previous ddport")
    if fresh_state:
        state = os.path.join(env.dir, "state")
        if os.path.isdir(state):
            for name in os.listdir(state):
                os.unlink(os.path.join(state, name))
    env.proc = ddtest.Ddport(write_config(env, extra), env.dir,
                             tcp_ports=[env.ports["proxy_port"], env.ports["update_port"]],
                             udp_ports=[env.ports["dns_port"]]).start()
    return env.proc


def auth(user, secret):
    return "Basic " + base64.b64encode(("%s:%s" % (user, secret)).encode()).decode()


def request(port, target, user="alice", secret=ALICE, agent=UA, method="GET",
            extra_headers=(), tls=False, authorization=None):
    """One request on its own connection: (status, response, body text)."""
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: update.ddport.test"]
    if authorization is not None:
        lines.append("Authorization: " + authorization)
    elif user is not None:
        lines.append("Authorization: " + auth(user, secret))
    if agent is not None:
        lines.append("User-Agent: " + agent)
    lines += list(extra_headers)
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if not tls:
        resp = ddtest.raw_exchange(port, raw)
        return resp.status, resp, resp.body.decode()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="update.ddport.test") as t:
            t.sendall(raw)
            data = b""
            for _ in range(1000):
                chunk = t.recv(4096)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                              if h.lower().startswith(b"content-length:")]
                    if length and len(body) >= length[0]:
                        break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), body.decode()


def update(env, query, **kw):
    status, _, body = request(env.ports["update_port"], "/nic/update?" + query, **kw)
    return status, body


def via_proxy(env, host, path="/"):
    return ddtest.curl(env.dir, "http://127.0.0.1:%d%s" % (env.ports["proxy_port"], path),
                       ["-H", "Host: " + host])


def soa_serial(env):
    r = ddtest.dig(env.ports["dns_port"], "ddport.test", "SOA")
    soa = r.records("answer", "SOA")
    check(soa, "no SOA: " + r.describe())
    return int(soa[0][4][2])


def wait_for(what, fn, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if fn():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise ddtest.Failure("not within %ss: %s" % (timeout, what))


# --------------------------------------------------------------------------


def test_good_then_routed_and_serial(env):
    """good: the proxy routes to the new port and the serial rises."""
    start(env)
    check_eq(via_proxy(env, "cam.ddport.test").status, 502, "before: the dead port")
    serial = soa_serial(env)
    status, body = update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d"
                          % env.backend.port)
    check_eq((status, body), (200, "good 127.0.0.1\n"), "update")
    r = via_proxy(env, "cam.ddport.test")
    check_eq(r.status, 200, "after: " + r.describe())
    check(env.backend.token.encode() in r.body, "the backend's page")
    # The serial steps at most once per dns.serial_batch (1s).
    wait_for("the SOA serial rose", lambda: soa_serial(env) > serial)
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d"
                    % env.backend.port), (200, "nochg 127.0.0.1\n"), "same again")


def test_many_names_and_listener_ports(env):
    """One line per name in order; port_<listener> sets any listener."""
    start(env)
    status, body = update(env, "hostname=nas.ddport.test,nobody.ddport.test,bobs.ddport.test,"
                          "nodot,cam.ddport.test&myip=127.0.0.1&port_https=%d&port=%d"
                          % (env.other.port, env.other.port))
    check_eq((status, body), (200, "good 127.0.0.1\nnohost\nnohost\nnotfqdn\ngood 127.0.0.1\n"),
             "reply lines")
    r = via_proxy(env, "nas.ddport.test")
    check(r.status == 200 and env.other.token.encode() in r.body, "nas routed: " + r.describe())


def test_source_address_and_ipv6(env):
    """Without myip the connection's source is used; myip=v4,v6 sets both."""
    start(env)
    check_eq(update(env, "hostname=cam.ddport.test&port=%d" % env.backend.port),
             (200, "good 127.0.0.1\n"), "source address")
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1,%3A%3A1"),
             (200, "abuse\n"), "::1 is loopback outside allow_targets")
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.9&myipv6=2001:db8::9"),
             (200, "abuse\n"), "documentation prefix outside allow_targets")


def test_reply_codes(env):
    """Each reply code from a request that earns it."""
    start(env)
    port = env.ports["update_port"]
    cases = [
        ("wrong secret", dict(query="hostname=cam.ddport.test", secret="nope"), 200, "badauth\n"),
        ("unknown account", dict(query="hostname=cam.ddport.test", user="mallory"), 200,
         "badauth\n"),
        ("other account's host", dict(query="hostname=bobs.ddport.test&myip=127.0.0.1"), 200,
         "nohost\n"),
        ("no such host", dict(query="hostname=nobody.ddport.test"), 200, "nohost\n"),
        ("no dot", dict(query="hostname=localhost"), 200, "notfqdn\n"),
        ("no hostname", dict(query="myip=127.0.0.1"), 200, "notfqdn\n"),
        ("21 names", dict(query="hostname=" + ",".join("h%d.ddport.test" % i for i in range(21))),
         200, "numhost\n"),
        ("bad myip", dict(query="hostname=cam.ddport.test&myip=127.0.0"), 200, "dnserr\n"),
        ("port out of range", dict(query="hostname=cam.ddport.test&port=70000"), 200, "dnserr\n"),
        ("unknown listener", dict(query="hostname=cam.ddport.test&port_mqtts=8883"), 200,
         "dnserr\n"),
        ("private address", dict(query="hostname=cam.ddport.test&myip=10.1.2.3"), 200, "abuse\n"),
        ("link-local", dict(query="hostname=cam.ddport.test&myip=169.254.1.1"), 200, "abuse\n"),
        ("malformed query", dict(query="hostname=cam.ddport.test&myip=%zz"), 400, "dnserr\n"),
        ("no user agent", dict(query="hostname=cam.ddport.test", agent=None), 200, "badagent\n"),
    ]
    for what, kw, want_status, want_body in cases:
        query = kw.pop("query")
        status, body = update(env, query, **kw)
        check_eq((status, body), (want_status, want_body), what)
    status, resp, body = request(port, "/nic/update?hostname=cam.ddport.test", user=None)
    check_eq((status, body), (401, "badauth\n"), "no credentials")
    check_eq(resp.header("WWW-Authenticate"), 'Basic realm="ddport"', "WWW-Authenticate")
    status, resp, body = request(port, "/nic/update?hostname=cam.ddport.test",
                                 authorization="Bearer abc")
    check_eq((status, body), (200, "badauth\n"), "malformed credentials")
    check_eq(request(port, "/other?hostname=cam.ddport.test")[0], 404, "wrong path")
    check_eq(request(port, "/nic/update?hostname=cam.ddport.test", method="DELETE")[0], 405,
             "DELETE")
    # A body announced and never sent: the request deadline answers.
    status, _, body = request(port, "/nic/update?hostname=cam.ddport.test&myip=127.0.0.1",
                              method="POST", extra_headers=["Content-Length: 4"])
    check_eq(status, 408, "POST whose body never comes")
    # POST carries the query in the target too; its body is read and ignored.
    with ddtest.RawConn(port) as conn:
        conn.send(("POST /nic/update?hostname=cam.ddport.test&myip=127.0.0.1 HTTP/1.1\r\n"
                   "Authorization: %s\r\nUser-Agent: %s\r\nContent-Length: 4\r\n\r\nabcd"
                   % (auth("alice", ALICE), UA)).encode())
        resp = conn.read_response()
        check_eq(resp.status, 200, "POST status")
        check(resp.body in (b"good 127.0.0.1\n", b"nochg 127.0.0.1\n"), "POST body %r" % resp.body)
        check(resp.header("Transfer-Encoding") is None, "never chunked")
        check_eq(resp.header("Content-Type"), "text/plain; charset=utf-8", "content type")


def test_keep_alive_and_pipelining(env):
    """Several requests on one connection, also sent at once."""
    start(env)
    one = ("GET /nic/update?hostname=nas.ddport.test&myip=127.0.0.1&port=%d HTTP/1.1\r\n"
           "Host: u\r\nAuthorization: %s\r\nUser-Agent: %s\r\n\r\n"
           % (env.other.port, auth("alice", ALICE), UA)).encode()
    with ddtest.RawConn(env.ports["update_port"]) as conn:
        conn.send(one)
        first = conn.read_response()
        conn.send(one * 3)
        rest = [conn.read_response() for _ in range(3)]
    check_eq(first.body, b"good 127.0.0.1\n", "first")
    check_eq([r.body for r in rest], [b"nochg 127.0.0.1\n"] * 3, "pipelined")


def test_offline_and_back(env):
    """offline=yes takes the name out of DNS and the proxy; an update
    without it brings the device back."""
    start(env)
    check_eq(ddtest.dig(env.ports["dns_port"], "offline.ddport.test").status, "NOERROR", "before")
    check_eq(update(env, "hostname=offline.ddport.test&myip=127.0.0.1&offline=yes"),
             (200, "good 127.0.0.1\n"), "offline")
    check_eq(ddtest.dig(env.ports["dns_port"], "offline.ddport.test").status, "NXDOMAIN",
             "offline in DNS")
    check_eq(via_proxy(env, "offline.ddport.test").status, 404, "offline in the proxy")
    check_eq(update(env, "hostname=offline.ddport.test&myip=127.0.0.1&port=%d"
                    % env.backend.port), (200, "good 127.0.0.1\n"), "back")
    check_eq(ddtest.dig(env.ports["dns_port"], "offline.ddport.test").status, "NOERROR", "after")
    check_eq(via_proxy(env, "offline.ddport.test").status, 200, "routed again")


def test_restart_replays_journal(env):
    """Acknowledged updates survive a restart."""
    start(env)
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d" % env.backend.port),
             (200, "good 127.0.0.1\n"), "update")
    start(env, fresh_state=False)
    r = via_proxy(env, "cam.ddport.test")
    check(r.status == 200 and env.backend.token.encode() in r.body,
          "routed after restart: " + r.describe())
    check("1 devices from" in env.proc.stderr_text(), "replay logged: " + env.proc.stderr_tail())
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d" % env.backend.port),
             (200, "nochg 127.0.0.1\n"), "still in force")


def test_admin_edit_wins(env):
    """An admin change to the device in YAML overrides its update, on
    reload and after a restart; the device may update again afterwards."""
    start(env)
    check_eq(update(env, "hostname=admin.ddport.test&myip=127.0.0.1&port=%d" % env.backend.port),
             (200, "good 127.0.0.1\n"), "update")
    check_eq(via_proxy(env, "admin.ddport.test").status, 200, "routed to the update")
    # The admin points the device at the other backend.
    extra = ""
    text = CONFIG.format(state=os.path.join(env.dir, "state"), extra=extra,
                         **env.ports, **env.hashes)
    text = text.replace("admin.ddport.test: {owner: alice, address: 127.0.0.1, ports: {http: %d}}"
                        % env.ports["dead_port"],
                        "admin.ddport.test: {owner: alice, address: 127.0.0.1, ports: {http: %d}}"
                        % env.other.port)
    ddtest.write_file(env.dir, "ddport.yaml", text)
    os.kill(env.proc.proc.pid, signal.SIGHUP)
    wait_for("the admin's port in force",
             lambda: env.other.token.encode() in via_proxy(env, "admin.ddport.test").body)
    # So that an admin reverting the edit does not revive the old update.
    wait_for("the journal compacted after the drop",
             lambda: "journal compacted" in env.proc.stderr_text())
    # Restart: the journal's record is older than the admin's edit.
    env.proc.stop()
    env.proc = ddtest.Ddport(os.path.join(env.dir, "ddport.yaml"), env.dir,
                             tcp_ports=[env.ports["proxy_port"], env.ports["update_port"]],
                             udp_ports=[env.ports["dns_port"]]).start()
    r = via_proxy(env, "admin.ddport.test")
    check(env.other.token.encode() in r.body, "admin's port after restart: " + r.describe())
    check_eq(update(env, "hostname=admin.ddport.test&myip=127.0.0.1&port=%d" % env.backend.port),
             (200, "good 127.0.0.1\n"), "the device updates again")
    check(env.backend.token.encode() in via_proxy(env, "admin.ddport.test").body, "updated")


def test_rate_limit(env):
    """More than updates_per_minute (5) for one device: abuse."""
    start(env)
    replies = [update(env, "hostname=burst.ddport.test&myip=127.0.0.1&port=%d" % (20000 + i))[1]
               for i in range(7)]
    check_eq(replies[:5], ["good 127.0.0.1\n"] * 5, "within the limit")
    check_eq(replies[5:], ["abuse\n"] * 2, "over the limit")
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d" % env.other.port)[1],
             "good 127.0.0.1\n", "another device is not limited")


def test_bad_credentials_slowed(env):
    """After three bad secrets from one source, the next request waits."""
    start(env)
    for _ in range(3):
        check_eq(update(env, "hostname=cam.ddport.test", secret="guess")[1], "badauth\n", "guess")
    check_eq(update(env, "hostname=cam.ddport.test", secret="guess")[1], "badauth\n", "4th")
    # The wait itself is ddport's to report; tests assert no timings.
    check("slowed down 1000 ms after repeated bad credentials" in env.proc.stderr_text(),
          "logged: " + env.proc.stderr_tail())
    # The right secret from the same source still works (after its wait),
    # and clears the count.
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d" % env.other.port)[1],
             "good 127.0.0.1\n", "right secret")


def test_secret_change_on_reload(env):
    """A cached secret stops working once the account's hash changes."""
    start(env)
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1")[1], "nochg 127.0.0.1\n",
             "first")
    env.hashes["alice_hash"] = ddtest.hash_secret("new-secret")
    write_config(env)
    os.kill(env.proc.proc.pid, signal.SIGHUP)
    wait_for("the new secret accepted",
             lambda: update(env, "hostname=cam.ddport.test&myip=127.0.0.1",
                            secret="new-secret")[1].startswith("nochg"))
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1")[1], "badauth\n",
             "old secret after the change")
    env.hashes["alice_hash"] = ddtest.hash_secret(ALICE)


def test_oversized_and_malformed(env):
    """Heads over max_request: 431; bodies over it: 413; garbage: 400."""
    start(env)
    port = env.ports["update_port"]
    big = ddtest.raw_exchange(port, b"GET /nic/update?hostname=" + b"a" * 3000 + b" HTTP/1.1\r\n")
    check_eq(big.status, 431, "head over 2KiB")
    body = ddtest.raw_exchange(port, b"POST /nic/update HTTP/1.1\r\nContent-Length: 99999\r\n\r\n")
    check_eq(body.status, 413, "body over 2KiB")
    check_eq(ddtest.raw_exchange(port, b"\x16\x03\x01\x00\x05hello\r\n\r\n").status, 400,
             "not HTTP")
    check_eq(ddtest.raw_exchange(port, b"GET /nic/update HTTP/1.1\r\nTransfer-Encoding: chunked"
                                 b"\r\n\r\n").status, 400, "chunked body")
    check(env.proc.running(), "still running")


def test_slow_request_timeout(env):
    """A request dripping in is answered 408 at the deadline (1.5s); an
    idle keep-alive connection is closed (3s)."""
    start(env)
    with ddtest.RawConn(env.ports["update_port"], timeout=10) as conn:
        conn.send(b"GET /nic/upd")
        t0 = time.monotonic()
        for _ in range(40):
            time.sleep(0.2)
            try:
                conn.send(b"a")
            except OSError:
                break
            if time.monotonic() - t0 > 6:
                break
        resp = conn.read_response()
        check_eq(resp.status, 408, "dripping request")
    with ddtest.RawConn(env.ports["update_port"], timeout=10) as conn:
        check(conn.wait_closed(overall=8), "idle connection closed")


def test_connection_limit(env):
    """connections: 8: the ninth is closed at once, and a slot frees up."""
    start(env)
    held = [ddtest.RawConn(env.ports["update_port"]) for _ in range(8)]
    try:
        time.sleep(0.3)
        with ddtest.RawConn(env.ports["update_port"], timeout=5) as extra:
            check(extra.wait_closed(overall=3), "ninth connection closed")
        check("connection limit (8) reached" in env.proc.stderr_text(), "logged")
    finally:
        for c in held:
            c.close()

    def slot_free():
        # Until the server has read the eight closes, an attempt is itself
        # over the limit and closed at once: that is "not yet", not a failure.
        try:
            return update(env, "hostname=cam.ddport.test&myip=127.0.0.1")[0] == 200
        except (ddtest.Failure, OSError):
            return False
    wait_for("a slot free again", slot_free)


def test_https_and_certificate_reload(env):
    """The HTTPS listener answers; SIGHUP loads a new certificate."""
    start(env)
    port = env.ports["update_tls_port"]
    status, _, body = request(port, "/nic/update?hostname=cam.ddport.test&myip=127.0.0.1",
                              tls=True)
    check_eq((status, body.split()[0] in ("good", "nochg")), (200, True), "over HTTPS")

    def served_cn():
        proc = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                               "-servername", "update.ddport.test"], input=b"",
                              capture_output=True, timeout=20)
        out = proc.stdout.decode("latin-1")
        return "renewed.ddport.test" in out, out

    check(not served_cn()[0], "the first certificate")
    ddtest.make_cert(env.dir, "update", "renewed.ddport.test")
    os.kill(env.proc.proc.pid, signal.SIGHUP)
    wait_for("the renewed certificate served", lambda: served_cn()[0])
    check("certificate" in env.proc.stderr_text() and "reloaded" in env.proc.stderr_text(),
          "reload logged")


def test_journal_failure_is_911(env):
    """When the journal cannot be written (its file system is full), the
    update is answered 911 and not applied; the last good one stays."""
    if env.proc:
        env.proc.stop()
        env.proc = None
    state = os.path.join(env.dir, "state")
    os.makedirs(state, exist_ok=True)
    for name in os.listdir(state):
        os.unlink(os.path.join(state, name))
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        raise ddtest.Skip("cannot make a mount namespace for a small tmpfs: %s"
                          % probe.stderr.decode().strip())
    env.ports["per_minute"] = 0
    config = write_config(env)
    env.ports["per_minute"] = 5
    proc = ddtest.Ddport(config, env.dir,
                         tcp_ports=[env.ports["proxy_port"], env.ports["update_port"]],
                         udp_ports=[env.ports["dns_port"]])
    # A file system of one page, private to ddport's mount namespace.
    proc.wrapper = ["unshare", "-m", "sh", "-c",
                    'mount -t tmpfs -o size=4k tmpfs "$0" && exec "$@"', state]
    env.proc = proc.start()
    last_good = None
    codes = []
    for i in range(400):
        body = update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d" % (30000 + i))[1]
        codes.append(body.split()[0])
        if body.startswith("good"):
            last_good = 30000 + i
        elif body == "911\n":
            break
    check_eq(codes[-1], "911", "the last answer (after %d good)" % codes.count("good"))
    check(last_good is not None, "some updates fit before the disk filled")
    check("the journal could not be written" in env.proc.stderr_text(), "logged")
    check_eq(update(env, "hostname=cam.ddport.test&myip=127.0.0.1&port=%d" % last_good)[1],
             "nochg 127.0.0.1\n", "the last good update is in force")
    check(env.proc.running(), "still running")
    check_eq(env.proc.stop(), 0, "exit status")
    env.proc = None


def test_check_reports_bad_tls_files(env):
    """A certificate that does not load stops start-up with the reason."""
    if env.proc:
        env.proc.stop()
        env.proc = None
    write_config(env)
    ddtest.write_file(env.dir, "broken.yaml",
                      open(os.path.join(env.dir, "ddport.yaml")).read()
                      .replace("cert: update.crt", "cert: missing.crt"))
    proc = subprocess.run([ddtest.DDPORT, "serve", "-c", os.path.join(env.dir, "broken.yaml")],
                          capture_output=True, timeout=30, cwd=env.dir)
    check_eq(proc.returncode, 1, "exit status")
    check(b"missing.crt" in proc.stderr, "names the file: %r" % proc.stderr[-400:])


def test_state_dir_locked(env):
    """A second ddport on the same state_dir is refused."""
    start(env)
    proc = subprocess.run([ddtest.DDPORT, "serve", "-c", os.path.join(env.dir, "ddport.yaml")],
                          capture_output=True, timeout=30, cwd=env.dir)
    check_eq(proc.returncode, 1, "exit status of the second")
    check(b"in use by another process" in proc.stderr, "why: %r" % proc.stderr[-300:])


CASES = [(f.__name__, f) for f in [
    test_good_then_routed_and_serial,
    test_many_names_and_listener_ports,
    test_source_address_and_ipv6,
    test_reply_codes,
    test_keep_alive_and_pipelining,
    test_offline_and_back,
    test_restart_replays_journal,
    test_admin_edit_wins,
    test_rate_limit,
    test_bad_credentials_slowed,
    test_secret_change_on_reload,
    test_oversized_and_malformed,
    test_slow_request_timeout,
    test_connection_limit,
    test_https_and_certificate_reload,
    test_journal_failure_is_911,
    test_check_reports_bad_tls_files,
    test_state_dir_locked,
]]

if __name__ == "__main__":
    sys.exit(ddtest.run_cases(CASES, setup, teardown))
