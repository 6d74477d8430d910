#!/usr/bin/python3
"""A real secondary replicates ddport: Knot (knotd), started by this test on
loopback with its own config, run and storage directories, transfers the
zone with TSIG (AXFR), serves the device names; after a reload adds a
device it receives NOTIFY, transfers by IXFR (just the change) and serves
the new name; after ddport restarts with another new device, it transfers
again (IXFR from a serial of the old process: answered in full). A second Knot with a wrong TSIG secret is
refused and never gets the zone. Loopback only; every process is stopped
by its PID."""

import base64
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
SECRET = base64.b64encode(bytes(range(200, 232))).decode()
WRONG = base64.b64encode(bytes(range(1, 33))).decode()

KNOT_CONF = """\
# written by tests/integration/test_dns_secondary.py
server:
    rundir: "{dir}/run"
    pidfile: "{dir}/run/knot.pid"
    listen: 127.0.0.1@{port}
control:
    listen: "{dir}/run/knot.sock"
database:
    storage: "{dir}/db"
log:
  - target: stderr
    any: info
key:
  - id: xfr
    algorithm: hmac-sha256
    secret: {secret}
remote:
  - id: primary
    address: 127.0.0.1@{primary}
    key: xfr
acl:
  - id: notify_from_primary
    address: 127.0.0.1
    key: xfr
    action: notify
template:
  - id: default
    storage: "{dir}/zones"
    zonefile-sync: -1
    zonefile-load: none
zone:
  - domain: ddport.test
    master: primary
    acl: notify_from_primary
"""


class Knot:
    """knotd -c CONF in the foreground, its log in a file."""

    def __init__(self, workdir, name, primary_port, secret):
        self.dir = os.path.join(workdir, name)
        for sub in ("run", "db", "zones"):
            os.makedirs(os.path.join(self.dir, sub))
        self.port = ddtest.free_port()
        self.conf = ddtest.write_file(self.dir, "knot.conf", KNOT_CONF.format(
            dir=self.dir, port=self.port, primary=primary_port, secret=secret))
        self.log_path = os.path.join(self.dir, "knotd.log")
        self.proc = None

    def start(self, timeout=15):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([KNOTD, "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        ddtest._live.append(self.proc)
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            if self.proc.poll() is not None:
                raise RuntimeError("knotd exited with %s: %s" % (self.proc.returncode, self.log()[-500:]))
            if ddtest.udp_dns_answers(self.port):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise RuntimeError("knotd not answering on port %d: %s" % (self.port, self.log()[-500:]))

    def stop(self):
        if self.proc is not None:
            return ddtest.stop_process(self.proc)
        return None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Env:
    pass


def ddport_config(env, extra_devices=""):
    text = ddtest.config_text(env.proxy_port, env.dns_port, env.proxy_port, env.proxy_port,
                              extra_devices=extra_devices)
    soa = "      soa: {email: hostmaster@ddport.test, refresh: 1h, retry: 10m, expire: 7d, minimum: 60}\n"
    check(soa in text, "test template changed: no SOA line")
    text = text.replace(soa, soa + "      allow_transfer: [xfr]\n"
                        "      notify: [{address: 127.0.0.1:%d, key: xfr}]\n" % env.knot.port, 1)
    return text.replace("  zones:\n", "  tsig_keys: {xfr: {algorithm: hmac-sha256, secret: %s}}\n"
                        "  zones:\n" % SECRET, 1)


def start_ddport(env, name, extra_devices=""):
    return ddtest.start_proxy_dns(env.dir, name, ddport_config(env, extra_devices),
                                  env.proxy_port, env.dns_port)


def setup():
    ddtest.require_binary()
    if not os.access(KNOTD, os.X_OK):
        raise RuntimeError("knotd not installed (package knot; scripts/setup installs it)")
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.ddport = env.knot = env.wrong = None
    try:
        env.proxy_port = ddtest.free_port()
        env.dns_port = ddtest.free_port()
        env.knot = Knot(env.dir, "knot", env.dns_port, SECRET)
        env.wrong = Knot(env.dir, "knot-wrong-key", env.dns_port, WRONG)
        env.ddport = start_ddport(env, "ddport")
    except Exception:
        teardown(env)
        raise
    return env


def teardown(env):
    try:
        for p in (env.knot, env.wrong, env.ddport):
            if p is not None:
                p.stop()
    finally:
        env.tmp.cleanup()


def poll(fn, timeout=30, interval=0.2):
    """fn() until it returns a true value, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    value = None
    for _ in range(int(timeout / interval) + 1):
        value = fn()
        if value or time.monotonic() > deadline:
            break
        time.sleep(interval)
    return value


def soa_serial(port):
    res = ddtest.dig(port, "ddport.test", "SOA", extra=["+norec"])
    soas = res.records("answer", "SOA")
    return int(soas[0][4][2]) if res.status == "NOERROR" and soas else None


def t_knot_transfers(env):
    env.knot.start()
    ours = soa_serial(env.dns_port)
    check(ours, "no SOA from ddport")
    got = poll(lambda: soa_serial(env.knot.port) == ours)
    check(got, "Knot does not serve serial %s after 30 s; knotd log: %s"
          % (ours, env.knot.log()[-600:]))
    check("AXFR of ddport.test serial %d to 127.0.0.1" % ours in env.ddport.stderr_text()
          and "key xfr" in env.ddport.stderr_text(),
          "ddport did not log a TSIG transfer: %s" % env.ddport.stderr_tail())


def t_knot_serves_devices(env):
    for name, rtype, want in (("demo.ddport.test", "A", ["127.0.0.1"]),
                              ("demo.ddport.test", "AAAA", ["::1"]),
                              ("anything.wild.ddport.test", "A", ["127.0.0.1"]),
                              ("ns1.ddport.test", "A", ["127.0.0.1"])):
        res = ddtest.dig(env.knot.port, name, rtype, extra=["+norec"])
        check_eq(res.status, "NOERROR", "Knot: %s %s (%s)" % (name, rtype, res.describe()))
        check("aa" in res.flags, "Knot's answer for %s is not authoritative" % name)
        check_eq(sorted(" ".join(r[4]) for r in res.records("answer", rtype)), want,
                 "Knot: %s %s" % (name, rtype))
    res = ddtest.dig(env.knot.port, "nobody.ddport.test", "A", extra=["+norec"])
    check_eq(res.status, "NXDOMAIN", "Knot: unknown name")


def t_reload_then_ixfr(env):
    old = soa_serial(env.dns_port)
    ddtest.write_file(env.dir, "ddport.yaml", ddport_config(
        env, "  added.ddport.test: {address: 127.0.0.1, ports: {http: %d}}\n" % env.proxy_port))
    env.ddport.reload()
    # The SOA refresh is an hour away: only the NOTIFY can bring this.
    res = poll(lambda: ddtest.dig(env.knot.port, "added.ddport.test", "A",
                                  extra=["+norec"]).status == "NOERROR")
    check(res, "Knot does not serve added.ddport.test 30 s after the reload; knotd log: %s"
          % env.knot.log()[-600:])
    new = soa_serial(env.dns_port)
    check_eq(new, old + 1, "serial after the reload")
    check_eq(soa_serial(env.knot.port), new, "Knot's serial")
    log = env.ddport.stderr_text()
    check("IXFR of ddport.test serial %d to 127.0.0.1" % new in log
          and "key xfr: incremental from serial %d" % old in log,
          "no incremental transfer logged: %s" % env.ddport.stderr_tail())
    check("AXFR of ddport.test serial %d" % new not in log, "Knot fell back to AXFR")
    check("IXFR, incoming" in env.knot.log() and "fallback to AXFR" not in env.knot.log(),
          "Knot did not log an IXFR: %s" % env.knot.log()[-600:])


def t_notify_after_restart(env):
    old = soa_serial(env.dns_port)
    # The serial is the load time in seconds: wait (bounded) for a new one.
    poll(lambda: int(time.time()) > old, timeout=5, interval=0.05)
    check_eq(env.ddport.stop(), 0, "ddport exit status")
    env.ddport = start_ddport(env, "ddport-2", "  new.ddport.test: {address: 127.0.0.1, "
                                              "ports: {http: %d}}\n" % env.proxy_port)
    new = soa_serial(env.dns_port)
    check(new and new > old, "serial did not rise across the restart (%s -> %s)" % (old, new))
    # The SOA refresh is an hour away: only the NOTIFY can bring this.
    res = poll(lambda: ddtest.dig(env.knot.port, "new.ddport.test", "A",
                                  extra=["+norec"]).status == "NOERROR")
    check(res, "Knot does not serve new.ddport.test 30 s after the NOTIFY; knotd log: %s"
          % env.knot.log()[-600:])
    check_eq(soa_serial(env.knot.port), new, "Knot's serial")
    log = env.ddport.stderr_text()
    check("NOTIFY of ddport.test serial %d to 127.0.0.1:%d acknowledged" % (new, env.knot.port)
          in log, "NOTIFY acknowledgement not logged: %s" % env.ddport.stderr_tail())
    check("XFR of ddport.test serial %d to 127.0.0.1" % new in log,
          "no transfer logged after the NOTIFY: %s" % env.ddport.stderr_tail())
    check("notify, incoming" in env.knot.log(), "Knot did not log the NOTIFY")


def t_wrong_key(env):
    env.wrong.start()
    check(poll(lambda: "TSIG BADSIG (wrong MAC) from 127.0.0.1" in env.ddport.stderr_text()),
          "ddport did not log the wrong key: %s" % env.ddport.stderr_tail())
    res = ddtest.dig(env.wrong.port, "demo.ddport.test", "A", extra=["+norec"])
    check(res.status != "NOERROR" and not res.answer,
          "a secondary with the wrong key serves the zone: %s" % res.describe())
    check(soa_serial(env.wrong.port) is None, "a secondary with the wrong key has a SOA")


def t_stop(env):
    check_eq(env.wrong.stop(), 0, "knotd (wrong key) exit status")
    check_eq(env.knot.stop(), 0, "knotd exit status")
    check_eq(env.ddport.stop(), 0, "ddport exit status")


CASES = [
    ("Knot secondary transfers the zone with TSIG", t_knot_transfers),
    ("Knot serves the device names", t_knot_serves_devices),
    ("reload adds a device: NOTIFY, IXFR, Knot serves it", t_reload_then_ixfr),
    ("new device, restart: NOTIFY, transfer, Knot serves it", t_notify_after_restart),
    ("a wrong TSIG key is refused and gets no zone", t_wrong_key),
    ("everything stops cleanly", t_stop),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
