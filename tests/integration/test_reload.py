#!/usr/bin/python3
"""Live reload against a real `ddport serve`: SIGHUP and the file watch
apply added, changed and removed devices to new connections and DNS
queries; a broken edit is refused and logged with FILE:LINE:COLUMN while
the registry in force keeps serving; settings the workers cannot change
are logged as needing a restart; and reloads under live traffic lose no
connection, no request and no DNS query."""

import base64
import os
import signal
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{proxy_port}}}
proxy:
  timeouts: {{peek: 5s, connect: 5s, idle: 5m, drain: 10s}}
  allow_targets: [127.0.0.0/8]
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - {{name: ddport.test, proxy: [127.0.0.1]}}
reload: {{watch: {watch}, delay: 200ms}}
registry: [devices.d/]
devices:
  demo.ddport.test: {{address: 127.0.0.1, ports: {{http: {backend_port}}}}}
{extra}"""

WAIT_S = 20  # the longest any step may take before the case fails


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.backend = ddtest.Backend()
    env.other = ddtest.Backend()  # a second device, to tell routes apart
    env.dead_port = ddtest.free_port()
    env.n = 0
    return env


def teardown(env):
    env.backend.stop()
    env.other.stop()
    env.tmp.cleanup()


class Server:
    """A ddport with its own directory, config and registry directory."""

    def __init__(self, env, watch=True, extra=""):
        env.n += 1
        self.extra = extra
        self.env = env
        self.dir = os.path.join(env.dir, "case%d" % env.n)
        os.makedirs(os.path.join(self.dir, "devices.d"))
        self.proxy_port = ddtest.free_port()
        self.dns_port = ddtest.free_port()
        self.watch = "on" if watch else "off"
        self.config = self.write_config()
        self.proc = ddtest.Ddport(self.config, self.dir, tcp_ports=[self.proxy_port],
                                  udp_ports=[self.dns_port])
        self.proc.extra_args = ["-v"]

    def write_config(self, text=None):
        if text is None:
            text = CONFIG.format(proxy_port=self.proxy_port, dns_port=self.dns_port,
                                 backend_port=self.env.backend.port, watch=self.watch,
                                 extra=self.extra)
        path = os.path.join(self.dir, "ddport.yaml")
        replace_file(path, text)
        return path

    # How long the start may take before the case fails.
    ready_timeout = 15
    # Owner of the devices write_devices writes, or None.
    owner = None

    def write_devices(self, name, devices):
        """devices: {name: port}; written as devices.d/<name>."""
        lines = ["devices:"]
        owner = "owner: %s, " % self.owner if self.owner else ""
        for dev, port in devices.items():
            lines.append("  %s: {%saddress: 127.0.0.1, ports: {http: %d}}" % (dev, owner, port))
        replace_file(os.path.join(self.dir, "devices.d", name), "\n".join(lines) + "\n")

    def log_count(self, needle):
        return self.proc.stderr_text().count(needle)

    def wait_log(self, needle, count, what):
        """Waits (bounded) until needle appears count times in the log."""
        deadline = time.monotonic() + WAIT_S
        for _ in range(int(WAIT_S / 0.02) + 1):
            if self.log_count(needle) >= count:
                return
            check(self.proc.running(), "ddport exited while waiting for %s; log: %s"
                  % (what, self.proc.stderr_tail()))
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise ddtest.Failure("no %r in the log (wanted %d, have %d) while waiting for %s; log: %s"
                             % (needle, count, self.log_count(needle), what,
                                self.proc.stderr_tail(12)))

    def outcomes_logged(self):
        """Reloads finished so far, applied or refused."""
        text = self.proc.stderr_text()
        return text.count(" devices in force ") + text.count(" refused; ")

    def wait_outcome(self, before, what):
        deadline = time.monotonic() + WAIT_S
        for _ in range(int(WAIT_S / 0.02) + 1):
            if self.outcomes_logged() > before:
                self.outcomes = self.outcomes_logged()
                return
            check(self.proc.running(), "ddport exited; log: %s" % self.proc.stderr_tail())
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise ddtest.Failure("no reload logged after %s; log: %s" % (what, self.proc.stderr_tail(12)))

    def sighup(self):
        """Sends SIGHUP and waits until the reload it causes is logged."""
        before = self.outcomes
        self.proc.proc.send_signal(signal.SIGHUP)
        self.wait_outcome(before, "SIGHUP")

    def file_reload(self, change):
        """Applies change() to the files and waits for the watch's reload."""
        before = self.outcomes
        change()
        self.wait_outcome(before, "a file change")

    def __enter__(self):
        self.outcomes = 0
        self.proc.start(ready_timeout=self.ready_timeout)
        # The ports answer once the workers listen; the file watches are
        # set a moment later, before "serving" is logged. A file written
        # in between would be missed.
        self.wait_log(" serving: ", 1, "the start")
        return self

    def __exit__(self, *exc):
        rc = self.proc.stop()
        if exc[0] is None:
            check_eq(rc, 0, "exit status after SIGTERM (log: %s)" % self.proc.stderr_tail())

    # what visitors see

    def get(self, host, path="/"):
        return ddtest.curl(self.dir, "http://127.0.0.1:%d%s" % (self.proxy_port, path),
                           ["-H", "Host: " + host], timeout=30)

    def routes_to(self, host, backend):
        res = self.get(host)
        check_eq(res.status, 200, "GET via %s: %s" % (host, res.describe()))
        check_eq(res.header(ddtest.BACKEND_HEADER), backend.token, "the device behind %s" % host)

    def status(self, host):
        return self.get(host).status

    def dns_status(self, name):
        return ddtest.dig(self.dns_port, name, "A").status


def replace_file(path, text):
    """Writes like an editor does: a new file renamed over the old one."""
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.rename(tmp, path)


# ---- SIGHUP and the file watch ---------------------------------------------


def t_sighup_add_change_remove(env):
    with Server(env, watch=False) as s:
        check_eq(s.status("new.ddport.test"), 404, "an unknown device before the reload")
        check_eq(s.dns_status("new.ddport.test"), "NXDOMAIN", "DNS before the reload")
        s.write_devices("new.yaml", {"new.ddport.test": env.other.port})
        time.sleep(0.3)  # with the watch off, nothing happens by itself
        check_eq(s.status("new.ddport.test"), 404, "no reload without SIGHUP when watch is off")
        s.sighup()
        s.routes_to("new.ddport.test", env.other)
        check_eq(s.dns_status("new.ddport.test"), "NOERROR", "DNS after adding")
        s.routes_to("demo.ddport.test", env.backend)

        s.write_devices("new.yaml", {"new.ddport.test": env.backend.port})
        s.sighup()
        s.routes_to("new.ddport.test", env.backend)

        s.write_devices("new.yaml", {"new.ddport.test": env.dead_port})
        s.sighup()
        check_eq(s.status("new.ddport.test"), 502, "a device changed to a dead port")

        os.unlink(os.path.join(s.dir, "devices.d", "new.yaml"))
        s.sighup()
        check_eq(s.status("new.ddport.test"), 404, "a removed device")
        check_eq(s.dns_status("new.ddport.test"), "NXDOMAIN", "DNS after removing")
        s.routes_to("demo.ddport.test", env.backend)


def t_watch_add_change_remove(env):
    with Server(env) as s:
        s.file_reload(lambda: s.write_devices("cam.yaml", {"cam.ddport.test": env.other.port}))
        s.routes_to("cam.ddport.test", env.other)
        check_eq(s.dns_status("cam.ddport.test"), "NOERROR", "DNS after adding")
        s.file_reload(lambda: s.write_devices("cam.yaml", {"cam.ddport.test": env.backend.port}))
        s.routes_to("cam.ddport.test", env.backend)
        s.file_reload(lambda: os.unlink(os.path.join(s.dir, "devices.d", "cam.yaml")))
        check_eq(s.status("cam.ddport.test"), 404, "a removed device")
        check_eq(s.dns_status("cam.ddport.test"), "NXDOMAIN", "DNS after removing")
        # Devices in the config file itself are watched as well.
        text = open(s.config, encoding="utf-8").read()
        s.file_reload(lambda: s.write_config(text.replace("demo.ddport.test", "demo2.ddport.test")))
        s.routes_to("demo2.ddport.test", env.backend)
        check_eq(s.status("demo.ddport.test"), 404, "the renamed device's old name")
        # Other files in the directories are not: editors' scratch files.
        n = s.log_count(" devices in force ")
        with open(os.path.join(s.dir, "devices.d", "notes.txt"), "w") as f:
            f.write("not yaml\n")
        with open(os.path.join(s.dir, ".ddport.yaml.swp"), "w") as f:
            f.write("scratch\n")
        time.sleep(0.6)  # three times the delay: room for a wrong reload to happen
        s.sighup()  # a marker: any reload the scratch files caused came first
        check_eq(s.log_count(" devices in force "), n + 1, "reloads after scratch files")
        # Memory of the replaced tables is given back: the workers, idle in
        # poll, hold up no grace period.
        s.wait_log("the table replaced by a reload is freed", 5, "the old tables to be freed")


def t_broken_edit_rejected(env):
    with Server(env) as s:
        s.file_reload(lambda: s.write_devices("a.yaml", {"a.ddport.test": env.other.port}))
        s.routes_to("a.ddport.test", env.other)
        broken = ("devices:\n"
                  "  b.ddport.test: {address: 127.0.0.1, ports: {http: %d}}\n"
                  "  a.ddport.test: {address: 127.0.0.1, ports: {htp: 80}}\n" % env.backend.port)
        path = os.path.join(s.dir, "devices.d", "a.yaml")
        s.file_reload(lambda: replace_file(path, broken))
        log = s.proc.stderr_text()
        line, col = ddtest.position_of(broken, "htp")
        where = "%s:%d:%d: no listener named 'htp'; did you mean 'http'?" % (path, line, col)
        check(where in log, "the problem logged as FILE:LINE:COLUMN (%r); log: %s"
              % (where, s.proc.stderr_tail(6)))
        check("refused; the registry in force is unchanged (2 devices)" in log,
              "the refusal is logged; log: %s" % s.proc.stderr_tail(6))
        # The registry in force keeps serving: a still routes, b never came.
        s.routes_to("a.ddport.test", env.other)
        s.routes_to("demo.ddport.test", env.backend)
        check_eq(s.status("b.ddport.test"), 404, "a device from the refused file")
        check_eq(s.dns_status("a.ddport.test"), "NOERROR", "DNS still answers from the registry in force")
        # A broken config file is refused the same way, on SIGHUP too.
        text = open(s.config, encoding="utf-8").read()
        s.write_config(text.replace("workers: 2", "workers: two"))
        s.sighup()
        check("%s:1:10: expected a number or 'auto' for 'workers'" % s.config in s.proc.stderr_text(),
              "the config's problem logged; log: %s" % s.proc.stderr_tail(6))
        s.routes_to("a.ddport.test", env.other)
        # Fixed: both files load, b appears.
        s.write_config(text)
        s.file_reload(lambda: s.write_devices("a.yaml", {"a.ddport.test": env.other.port,
                                                         "b.ddport.test": env.backend.port}))
        s.routes_to("b.ddport.test", env.backend)


def t_needs_restart(env):
    with Server(env) as s:
        text = open(s.config, encoding="utf-8").read()
        new_port = ddtest.free_port()
        changed = (text.replace(str(s.proxy_port), str(new_port))
                   .replace("workers: 2", "workers: 3")
                   .replace("idle: 5m", "idle: 4m")
                   .replace("proxy: [127.0.0.1]", "proxy: [127.0.0.2]"))
        s.write_config(changed)
        s.sighup()
        log = s.proc.stderr_text()
        for key in ("workers", "proxy.timeouts", "dns.zones"):
            check("needs a restart: %s " % key in log, "'needs a restart: %s' logged; log: %s"
                  % (key, s.proc.stderr_tail(8)))
        check("needs a restart: dns.listen" not in log, "an unchanged key is not named")
        # Listeners apply at once (test_reload_listeners.py has the details):
        # the listener moved to its new address and serves there.
        check("needs a restart: listeners" not in log, "listeners are not named")
        s.proxy_port = new_port
        s.routes_to("demo.ddport.test", env.backend)


# ---- reloads under live traffic ---------------------------------------------


class RequestStream(threading.Thread):
    """New connections, one GET each, back to back until stopped."""

    def __init__(self, port, host, token):
        super().__init__(daemon=True)
        self.port, self.host, self.token = port, host, token
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors = []

    def run(self):
        req = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % self.host).encode()
        for _ in range(200000):
            if self.stop_flag.is_set():
                return
            try:
                with ddtest.RawConn(self.port, timeout=10) as conn:
                    conn.send(req)
                    resp = conn.read_response(overall=15)
                if resp.status != 200 or resp.header(ddtest.BACKEND_HEADER) != self.token:
                    self.errors.append("status %s backend %s" % (resp.status,
                                                                 resp.header(ddtest.BACKEND_HEADER)))
                else:
                    self.ok += 1
            except Exception as exc:  # every failure is counted, none hidden
                self.errors.append("%s: %s" % (type(exc).__name__, exc))
            if len(self.errors) > 20:
                return


class DnsStream(threading.Thread):
    """One UDP query at a time, each waiting for its answer."""

    def __init__(self, port, name):
        super().__init__(daemon=True)
        self.port, self.name = port, name
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors = []

    def run(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.port))
        try:
            for _ in range(200000):
                if self.stop_flag.is_set() or len(self.errors) > 20:
                    return
                qid, msg = ddtest.dns_probe_query(self.name, qtype=1)
                try:
                    sock.send(msg)
                    data = sock.recv(4096)
                except OSError as exc:
                    self.errors.append("query %d: %s" % (qid, exc))
                    continue
                rid, flags, _, ancount = struct.unpack("!HHHH", data[:8])
                if rid != qid or flags & 0xF != 0 or ancount < 1:
                    self.errors.append("id %d/%d rcode %d answers %d" % (rid, qid, flags & 0xF, ancount))
                else:
                    self.ok += 1
        finally:
            sock.close()


def t_reload_under_traffic(env):
    with Server(env) as s:
        s.write_devices("other.yaml", {"other.ddport.test": env.other.port})
        s.sighup()
        # A 10 MiB transfer, read slowly so it stays in flight across every
        # reload below (TCP backpressure holds the rest in the buffers).
        big = ddtest.RawConn(s.proxy_port, timeout=30)
        big.send(b"GET /big HTTP/1.1\r\nHost: demo.ddport.test\r\n\r\n")
        deadline = time.monotonic() + WAIT_S
        while b"\r\n\r\n" not in big.buf:
            check(big._fill(deadline), "the big response started")
        requests = RequestStream(s.proxy_port, "other.ddport.test", env.other.token)
        queries = DnsStream(s.dns_port, "other.ddport.test")
        requests.start()
        queries.start()
        try:
            for i in range(6):
                # Every reload changes the registry; the devices in use stay.
                devices = {"churn%d.ddport.test" % j: env.backend.port for j in range(i * 50)}
                if i % 2 == 0:
                    s.write_devices("churn.yaml", devices)
                    s.sighup()
                else:
                    s.file_reload(lambda: s.write_devices("churn.yaml", devices))
                # Let some traffic through between reloads (bounded wait).
                for _ in range(500):
                    if requests.ok > (i + 1) * 5 and queries.ok > (i + 1) * 20:
                        break
                    time.sleep(0.01)
                check(big.buf and not big.eof, "the big transfer is still in flight at reload %d" % i)
        finally:
            requests.stop_flag.set()
            queries.stop_flag.set()
            requests.join(timeout=60)
            queries.join(timeout=60)
        resp = big.read_response(overall=60)
        big.close()
        check_eq(resp.status, 200, "the big transfer's status")
        check_eq(len(resp.body), ddtest.BIG_SIZE, "the big transfer's length")
        check_eq(ddtest.sha256(resp.body), ddtest.sha256(ddtest.big_body()), "the big transfer's sha256")
        check_eq(requests.errors, [], "failed requests during reloads (%d ok)" % requests.ok)
        check_eq(queries.errors, [], "failed DNS queries during reloads (%d ok)" % queries.ok)
        check(requests.ok >= 6 and queries.ok >= 6, "traffic flowed: %d requests, %d queries"
              % (requests.ok, queries.ok))
        check_eq(s.log_count(" devices in force "), 7, "reloads applied")
        s.routes_to("churn249.ddport.test", env.backend)
        print("# %d requests and %d DNS queries across 6 reloads" % (requests.ok, queries.ok))


# ---- a registry big enough that reading it takes a while ----------------------

# Devices in the big registry: at least a second to read here (several
# under the sanitizers), while an update takes milliseconds.
BIG_DEVICES = 400000
ALICE = "alice-reload-secret"


def big_registry(env):
    """A devices file of BIG_DEVICES names, written once per run; each
    case links it into its own registry directory."""
    path = os.path.join(env.dir, "big.yaml")
    if not os.path.exists(path):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("devices:\n")
            for i in range(BIG_DEVICES):
                f.write("  big%d.ddport.test: {address: 127.0.0.1, ports: {http: %d}}\n"
                        % (i, env.dead_port))
        os.rename(path + ".tmp", path)
    return path


class BigServer(Server):
    """A Server with the big registry, an update endpoint and an account
    owning cam.ddport.test (at a dead port until updated)."""

    ready_timeout = 120
    owner = "alice"

    def __init__(self, env):
        self.update_port = ddtest.free_port()
        extra = ("state_dir: state\n"
                 "update: {listen: [127.0.0.1:%d]}\n"
                 "accounts:\n  alice: {secret: \"%s\"}\n"
                 % (self.update_port, ddtest.hash_secret(ALICE)))
        super().__init__(env, watch=False, extra=extra)
        self.write_devices("cam.yaml", {"cam.ddport.test": env.dead_port})
        os.link(big_registry(env), os.path.join(self.dir, "devices.d", "big.yaml"))
        self.proc.tcp_ports = list(self.proc.tcp_ports) + [self.update_port]

    def start_reload(self):
        """SIGHUP, and waits until the files are being read."""
        reading = self.log_count("reload (SIGHUP): reading")
        self.proc.proc.send_signal(signal.SIGHUP)
        self.wait_log("reload (SIGHUP): reading", reading + 1, "the read to start")

    def update(self, host, port):
        raw = ("GET /nic/update?hostname=%s&myip=127.0.0.1&port=%d HTTP/1.1\r\n"
               "Host: update.ddport.test\r\nUser-Agent: ddtest/1.0\r\n"
               "Authorization: Basic %s\r\n\r\n"
               % (host, port, base64.b64encode(("alice:" + ALICE).encode()).decode()))
        resp = ddtest.raw_exchange(self.update_port, raw.encode())
        return resp.status, resp.body.decode()


def t_update_while_reading(env):
    with BigServer(env) as s:
        check_eq(s.status("cam.ddport.test"), 502, "cam before its update (a dead port)")
        s.start_reload()
        status, body = s.update("cam.ddport.test", env.backend.port)
        # The control loop answered while the reload was still being read.
        still_reading = s.outcomes_logged() == 0
        check_eq((status, body), (200, "good 127.0.0.1\n"), "the update during the read")
        check(still_reading, "the update was answered before the reload was in force; log: %s"
              % s.proc.stderr_tail(6))
        s.wait_outcome(0, "SIGHUP")
        check_eq(s.log_count(" refused; "), 0, "the reload applied")
        # The update taken during the read is laid over the files read.
        s.routes_to("cam.ddport.test", env.backend)
        check_eq(s.dns_status("big%d.ddport.test" % (BIG_DEVICES - 1)), "NOERROR",
                 "the big registry's last name")


def t_sighup_during_read_follows(env):
    with BigServer(env) as s:
        s.start_reload()
        s.write_devices("new.yaml", {"new.ddport.test": env.other.port})
        s.proc.proc.send_signal(signal.SIGHUP)
        s.wait_log("another reload is being read; this one follows it", 1, "the second SIGHUP")
        s.wait_outcome(0, "the first reload")
        s.wait_log(" devices in force ", 2, "the second reload")
        check_eq(s.log_count(" refused; "), 0, "reloads refused")
        # The edit made during the first read is in force.
        s.routes_to("new.ddport.test", env.other)
        check_eq(s.dns_status("new.ddport.test"), "NOERROR", "DNS of the device added")


def t_sigterm_during_read(env):
    s = BigServer(env)
    with s:
        s.start_reload()
        rc = s.proc.stop(timeout=120)
        check_eq(rc, 0, "exit status after SIGTERM during a read (log: %s)" % s.proc.stderr_tail())
        check_eq(s.log_count("stopping: waiting for the reload being read"), 1,
                 "the wait for the read logged")
        check_eq(s.log_count(" devices in force "), 0, "a reload applied while stopping")


CASES = [
    ("SIGHUP: a device added, changed, removed", t_sighup_add_change_remove),
    ("file watch: a device added, changed, removed; scratch files ignored", t_watch_add_change_remove),
    ("a broken edit is refused and logged; the registry in force serves", t_broken_edit_rejected),
    ("settings the workers cannot change are logged as needing a restart", t_needs_restart),
    ("reloads under live traffic lose no connection, request or query", t_reload_under_traffic),
    ("an update is answered while a big registry is read, and kept", t_update_while_reading),
    ("a SIGHUP during a read is applied after it", t_sighup_during_read_follows),
    ("SIGTERM during a read waits for it and exits 0", t_sigterm_during_read),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
