#!/usr/bin/python3
"""Real dyndns2 clients against the update endpoint of a real `ddport serve`:
ddclient (Debian's 3.10) and inadyn (2.10) update a device, and the proxy
and the DNS zone follow: the proxy routes the device's name to the new
address and port, the zone's SOA serial rises. A repeated update is
`nochg`; a device owned by another account is `nohost`, which both clients
report as a failure, and the device keeps its route.

Isolation. inadyn resolves the hostname it updates (and, when its checkip
command gives an address it finds unfit, asks api.ipify.org) through the
system resolver. So setup() moves this whole test process, before it
starts any thread, into a network namespace of its own (unshare(2) with
CLONE_NEWNET, through ctypes: Debian 12's Python has no os.unshare) that
holds nothing but a loopback interface. ddport, the backends, curl, dig
and both clients are its children and live there too: every connection
stays on that loopback, and a name lookup fails at once instead of
leaving the machine. inadyn refuses 127.0.0.0/8 as "not a valid Internet
address", so the namespace's loopback also carries 198.51.100.7
(TEST-NET-2, documentation only), the address inadyn reports, with a
backend listening on it. When the namespace cannot be made (no
CAP_SYS_ADMIN), the inadyn cases are skipped with the reason and the
ddclient cases run on the host's loopback: ddclient with `use=ip` never
resolves anything.

ddclient cannot send ddport's `port=` parameter, so its cases move a
device between addresses (127.0.0.2 to 127.0.0.1, a backend on the same
port of each); inadyn's `ddns-path` carries `port=` and its cases move the
port as well."""

import os
import re
import shutil
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

DDCLIENT = shutil.which("ddclient") or "/usr/bin/ddclient"
INADYN = shutil.which("inadyn") or "/usr/sbin/inadyn"

INADYN_ADDR = "198.51.100.7"  # on the namespace's loopback only

ALICE_SECRET = "alice-s3cret"
BOB_SECRET = "bob-s3cret"

CONFIG = """\
workers: 1
state_dir: {state_dir}
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{proxy_port}}}
proxy:
  timeouts: {{peek: 5s, connect: 5s, idle: 1m}}
  allow_targets: [127.0.0.0/8, {inadyn_addr}/32]
  access_log: {access_log}
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - {{name: ddport.test, proxy: [127.0.0.1]}}
update:
  listen: [127.0.0.1:{update_port}]
accounts:
  alice: {{secret: "{alice_hash}"}}
  bob: {{secret: "{bob_hash}"}}
devices:
{devices}"""

WAIT_S = 10  # the longest a change may take to show


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    # First, before any thread or child exists: see the docstring.
    env.no_netns = ddtest.enter_private_network([INADYN_ADDR + "/32"])
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.alice_hash = ddtest.hash_secret(ALICE_SECRET)
    env.bob_hash = ddtest.hash_secret(BOB_SECRET)
    env.n = 0
    return env


def teardown(env):
    env.tmp.cleanup()


class Server:
    """A ddport with the update endpoint, its own directory and state_dir;
    devices: {name: (owner, address, port)}."""

    def __init__(self, env, devices):
        env.n += 1
        self.env = env
        self.dir = os.path.join(env.dir, "case%d" % env.n)
        os.makedirs(self.dir)
        self.proxy_port = ddtest.free_port()
        self.dns_port = ddtest.free_port()
        self.update_port = ddtest.free_port()
        self.access_log = os.path.join(self.dir, "access.log")
        lines = "".join("  %s: {owner: %s, address: %s, ports: {http: %d}}\n" % (name, owner, addr, port)
                        for name, (owner, addr, port) in devices.items())
        text = CONFIG.format(state_dir=os.path.join(self.dir, "state"), proxy_port=self.proxy_port,
                             dns_port=self.dns_port, update_port=self.update_port,
                             access_log=self.access_log, inadyn_addr=INADYN_ADDR,
                             alice_hash=env.alice_hash, bob_hash=env.bob_hash, devices=lines)
        self.config = ddtest.write_file(self.dir, "ddport.yaml", text)
        self.proc = ddtest.Ddport(self.config, self.dir,
                                  tcp_ports=[self.proxy_port, self.update_port],
                                  udp_ports=[self.dns_port])

    def __enter__(self):
        self.proc.start()
        return self

    def __exit__(self, *exc):
        rc = self.proc.stop()
        if exc[0] is None:
            check_eq(rc, 0, "ddport's exit status after SIGTERM (log: %s)" % self.proc.stderr_tail())

    def log(self):
        return self.proc.stderr_text()

    def get(self, host):
        return ddtest.curl(self.dir, "http://127.0.0.1:%d/" % self.proxy_port,
                           ["-H", "Host: " + host], timeout=30)

    def routes_to(self, host, backend, what):
        res = self.get(host)
        check_eq(res.status, 200, "%s: GET via %s: %s" % (what, host, res.describe()))
        check_eq(res.header(ddtest.BACKEND_HEADER), backend.token,
                 "%s: the backend behind %s" % (what, host))
        check(backend.token.encode() in res.body, "%s: the backend's page came through" % what)

    def access_targets(self, host, count):
        """The targets of the access log's lines for host, once there are
        count of them (a line is written as its connection ends, which may
        be just after curl has its answer)."""
        pattern = re.compile(r" name=%s target=(\S+) " % re.escape(host))
        deadline = time.monotonic() + WAIT_S
        for _ in range(int(WAIT_S / 0.02) + 1):
            with open(self.access_log, encoding="utf-8", errors="replace") as f:
                targets = pattern.findall(f.read())
            if len(targets) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return targets

    def serial(self):
        res = ddtest.dig(self.dns_port, "ddport.test", "SOA")
        soa = res.records("answer", "SOA")
        check(res.status == "NOERROR" and len(soa) == 1, "SOA query: %s" % res.describe())
        return int(soa[0][4][2])

    def wait_serial_above(self, old, what):
        """The zone's serial once it is above old (bounded wait)."""
        deadline = time.monotonic() + WAIT_S
        for _ in range(int(WAIT_S / 0.05) + 1):
            serial = self.serial()
            if serial > old or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        check(serial > old, "%s: the SOA serial did not rise from %d" % (what, old))
        return serial


# ---- ddclient ---------------------------------------------------------------


DDCLIENT_CONF = """\
# written by test_update_clients.py
daemon=0
ssl=no
protocol=dyndns2
use=ip, ip={ip}
server=127.0.0.1:{port}
script=/nic/update
login={login}
password='{password}'
{hosts}
"""


def ddclient(s, hosts, login="alice", password=ALICE_SECRET, ip="127.0.0.1", name="ddclient"):
    """Runs ddclient once (forced, in the foreground) for hosts. Returns
    (exit status, its stdout and stderr together, its cache file)."""
    if not os.access(DDCLIENT, os.X_OK):
        raise ddtest.Skip("ddclient is not installed (%s)" % DDCLIENT)
    conf = os.path.join(s.dir, name + ".conf")
    with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(DDCLIENT_CONF.format(ip=ip, port=s.update_port, login=login, password=password,
                                     hosts=",".join(hosts)))
    cache = os.path.join(s.dir, name + ".cache")
    proc = ddtest.run([DDCLIENT, "-file", conf, "-cache", cache, "-foreground", "-force",
                       "-daemon=0", "-verbose", "-noquiet"], timeout=60)
    return proc.returncode, proc.stdout + proc.stderr, cache


def ddclient_says(out, kind, host, rest):
    """ddclient's `KIND:  updating HOST: REST` line is in out."""
    return re.search(r"^%s:\s+updating %s: %s" % (kind, re.escape(host), re.escape(rest)), out,
                     re.M) is not None


def two_backends():
    """Backends on 127.0.0.1 and 127.0.0.2, the same port on each."""
    new = ddtest.Backend()
    try:
        old = ddtest.Backend(host="127.0.0.2", port=new.port)
    except OSError as exc:
        new.stop()
        raise ddtest.Skip("cannot listen on 127.0.0.2:%d: %s" % (new.port, exc))
    return old, new


def t_ddclient_updates_address(env):
    old, new = two_backends()
    try:
        devices = {"cam.ddport.test": ("alice", "127.0.0.2", new.port)}
        with Server(env, devices) as s:
            s.routes_to("cam.ddport.test", old, "before the update")
            serial = s.serial()
            rc, out, cache = ddclient(s, ["cam.ddport.test"])
            check(ddclient_says(out, "SUCCESS", "cam.ddport.test", "good: IP address set to 127.0.0.1"),
                  "ddclient reports the update done; output: %s" % ddtest._one_line(out)[-800:])
            check("FAILED" not in out, "ddclient reports a failure: %s" % ddtest._one_line(out)[-800:])
            check_eq(rc, 0, "ddclient's exit status")
            with open(cache, encoding="utf-8") as f:
                cached = f.read()
            check(re.search(r"\bip=127\.0\.0\.1,.*\bstatus=good\b", cached),
                  "ddclient's cache records the address as good: %r" % cached)
            check("update: alice from 127.0.0.1: cam.ddport.test good 127.0.0.1" in s.log(),
                  "ddport logs the update; log: %s" % s.proc.stderr_tail())
            # Answered only once applied: the proxy routes there already.
            s.routes_to("cam.ddport.test", new, "after ddclient's update")
            serial = s.wait_serial_above(serial, "after ddclient's update")
            res = ddtest.dig(s.dns_port, "cam.ddport.test", "A")
            check_eq([r[4] for r in res.records("answer", "A")], [["127.0.0.1"]],
                     "the device's A record (the zone's proxy address)")

            # Again, forced: nothing changes, ddclient takes nochg as done.
            rc, out, _ = ddclient(s, ["cam.ddport.test"])
            check(ddclient_says(out, "WARNING", "cam.ddport.test", "nochg"),
                  "ddclient saw nochg; output: %s" % ddtest._one_line(out)[-800:])
            check("FAILED" not in out, "ddclient reports a failure: %s" % ddtest._one_line(out)[-800:])
            check_eq(rc, 0, "ddclient's exit status after nochg")
            check("cam.ddport.test nochg 127.0.0.1" in s.log(), "ddport logs nochg")
            check_eq(s.serial(), serial, "the SOA serial after nochg")
            s.routes_to("cam.ddport.test", new, "after nochg")
    finally:
        old.stop()
        new.stop()


def t_ddclient_other_owner(env):
    old, new = two_backends()
    try:
        devices = {"cam.ddport.test": ("alice", "127.0.0.2", new.port),
                   "bobs.ddport.test": ("bob", "127.0.0.2", new.port)}
        with Server(env, devices) as s:
            serial = s.serial()
            # Alone: refused, nothing changes.
            rc, out, _ = ddclient(s, ["bobs.ddport.test"], name="alone")
            check(ddclient_says(out, "FAILED", "bobs.ddport.test", "nohost"),
                  "ddclient reports nohost as failed; output: %s" % ddtest._one_line(out)[-800:])
            check("SUCCESS" not in out, "ddclient reports a success: %s" % ddtest._one_line(out)[-800:])
            check(rc != 0, "ddclient's exit status after nohost is %d" % rc)
            check("update: alice from 127.0.0.1: bobs.ddport.test nohost: another account's device"
                  in s.log(), "ddport logs why; log: %s" % s.proc.stderr_tail())
            check_eq(s.serial(), serial, "the SOA serial after a refused update")
            s.routes_to("bobs.ddport.test", old, "bob's device after alice's refused update")

            # In one request with alice's own device (ddclient groups hosts
            # that share a login): one line each, in order.
            rc, out, _ = ddclient(s, ["cam.ddport.test", "bobs.ddport.test"], name="both")
            check(ddclient_says(out, "FAILED", "bobs.ddport.test", "nohost"),
                  "ddclient reports nohost for bob's device; output: %s" % ddtest._one_line(out)[-800:])
            check(ddclient_says(out, "SUCCESS", "cam.ddport.test", "good: IP address set to 127.0.0.1"),
                  "ddclient reports alice's device done; output: %s" % ddtest._one_line(out)[-800:])
            check(rc != 0, "ddclient's exit status with one host failed is %d" % rc)
            s.routes_to("cam.ddport.test", new, "alice's device")
            s.routes_to("bobs.ddport.test", old, "bob's device")
            s.wait_serial_above(serial, "after alice's device changed")

            # Bob's own secret is not alice's: badauth, a failure too.
            rc, out, _ = ddclient(s, ["bobs.ddport.test"], password=BOB_SECRET, name="wrong")
            check(ddclient_says(out, "FAILED", "bobs.ddport.test", "badauth"),
                  "ddclient reports badauth; output: %s" % ddtest._one_line(out)[-800:])
            check(rc != 0, "ddclient's exit status after badauth is %d" % rc)
            s.routes_to("bobs.ddport.test", old, "bob's device after a wrong secret")
    finally:
        old.stop()
        new.stop()


# ---- inadyn -----------------------------------------------------------------


INADYN_CONF = """\
# written by test_update_clients.py
custom ddport {{
    hostname = "{host}"
    username = alice
    password = "{password}"
    ddns-server = "127.0.0.1:{port}"
    ddns-path = "/nic/update?hostname=%h&myip=%i&port={device_port}"
    checkip-command = "/bin/echo {ip}"
    ssl = false
}}
"""


def require_inadyn(env):
    if env.no_netns:
        raise ddtest.Skip("inadyn needs a private network namespace: %s" % env.no_netns)
    if not os.access(INADYN, os.X_OK):
        raise ddtest.Skip("inadyn is not installed (%s)" % INADYN)


def inadyn(env, s, host, device_port, name="inadyn"):
    """Runs inadyn once, forced, in the foreground with a cache directory.
    Returns (exit status, its output)."""
    require_inadyn(env)
    conf = ddtest.write_file(s.dir, name + ".conf",
                             INADYN_CONF.format(host=host, password=ALICE_SECRET, port=s.update_port,
                                                device_port=device_port, ip=INADYN_ADDR))
    cache = os.path.join(s.dir, "inadyn-cache")
    os.makedirs(cache, exist_ok=True)
    proc = ddtest.run([INADYN, "--once", "--force", "--foreground", "--no-pidfile",
                       "--config", conf, "--cache-dir", cache, "--loglevel", "info"], timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def t_inadyn_updates_address_and_port(env):
    require_inadyn(env)
    first = ddtest.Backend(host=INADYN_ADDR)
    second = ddtest.Backend(host=INADYN_ADDR)
    dead_port = ddtest.free_port()
    try:
        devices = {"cam.ddport.test": ("alice", "127.0.0.1", dead_port)}
        with Server(env, devices) as s:
            check_eq(s.get("cam.ddport.test").status, 502, "the device before the update (a dead port)")
            serial = s.serial()
            rc, out = inadyn(env, s, "cam.ddport.test", first.port)
            check_eq(rc, 0, "inadyn's exit status (output: %s)" % ddtest._one_line(out)[-800:])
            check("Successful alias table update for cam.ddport.test => new IP# %s" % INADYN_ADDR in out,
                  "inadyn reports the update done; output: %s" % ddtest._one_line(out)[-800:])
            check("update: alice from 127.0.0.1: cam.ddport.test good %s" % INADYN_ADDR in s.log(),
                  "ddport logs the update; log: %s" % s.proc.stderr_tail())
            with open(os.path.join(s.dir, "inadyn-cache", "cam.ddport.test.cache")) as f:
                check_eq(f.read().strip(), INADYN_ADDR, "inadyn's cache")
            s.routes_to("cam.ddport.test", first, "after inadyn's update (address and port)")
            serial = s.wait_serial_above(serial, "after inadyn's update")

            # Again, forced, from its cache: nochg, which inadyn accepts.
            rc, out = inadyn(env, s, "cam.ddport.test", first.port)
            check_eq(rc, 0, "inadyn's exit status after nochg (output: %s)" % ddtest._one_line(out)[-800:])
            check("cam.ddport.test nochg %s" % INADYN_ADDR in s.log(), "ddport logs nochg")
            check_eq(s.serial(), serial, "the SOA serial after nochg")

            # The same address, another port: an update, not nochg.
            rc, out = inadyn(env, s, "cam.ddport.test", second.port)
            check_eq(rc, 0, "inadyn's exit status for a new port (output: %s)"
                     % ddtest._one_line(out)[-800:])
            check_eq(s.log().count("cam.ddport.test good %s" % INADYN_ADDR), 2,
                     "updates ddport logged as good")
            s.routes_to("cam.ddport.test", second, "after inadyn moved the port")
            s.wait_serial_above(serial, "after inadyn moved the port")
            check_eq(s.access_targets("cam.ddport.test", 3),
                     ["127.0.0.1:%d" % dead_port, "%s:%d" % (INADYN_ADDR, first.port),
                      "%s:%d" % (INADYN_ADDR, second.port)], "the proxy's targets, in order")
    finally:
        first.stop()
        second.stop()


def t_inadyn_other_owner(env):
    require_inadyn(env)
    backend = ddtest.Backend()
    try:
        devices = {"bobs.ddport.test": ("bob", "127.0.0.1", backend.port)}
        with Server(env, devices) as s:
            serial = s.serial()
            rc, out = inadyn(env, s, "bobs.ddport.test", backend.port + 1)
            check(rc != 0, "inadyn's exit status after nohost is 0 (output: %s)"
                  % ddtest._one_line(out)[-800:])
            check(re.search(r"\bnohost\b", out), "inadyn shows the nohost reply; output: %s"
                  % ddtest._one_line(out)[-800:])
            check("Successful alias table update" not in out, "inadyn reports success: %s"
                  % ddtest._one_line(out)[-800:])
            check("update: alice from 127.0.0.1: bobs.ddport.test nohost: another account's device"
                  in s.log(), "ddport logs why; log: %s" % s.proc.stderr_tail())
            check(not os.path.exists(os.path.join(s.dir, "inadyn-cache", "bobs.ddport.test.cache")),
                  "inadyn cached a refused update")
            check_eq(s.serial(), serial, "the SOA serial after a refused update")
            s.routes_to("bobs.ddport.test", backend, "bob's device after alice's refused update")
    finally:
        backend.stop()


CASES = [
    ("ddclient moves a device's address; proxy and DNS follow; nochg", t_ddclient_updates_address),
    ("ddclient: another account's device is nohost, reported failed", t_ddclient_other_owner),
    ("inadyn moves a device's address and port; proxy and DNS follow; nochg",
     t_inadyn_updates_address_and_port),
    ("inadyn: another account's device is nohost, reported failed", t_inadyn_other_owner),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
