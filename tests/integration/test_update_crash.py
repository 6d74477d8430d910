#!/usr/bin/python3
"""Updates survive `kill -9` of ddport itself: client threads each update
their own device over and over (a new port every time, keep-alive or a
new connection per request), ddport is killed with SIGKILL mid-stream
after some hundreds of `good` answers, and restarted on the same
state_dir. For every device the port in force after the restart must be
the last one answered `good`, or the one whose request was in flight at
the kill: never an older one, never anything else. The port in force is
observed from outside, through the proxy: a request for devK.ddport.test
makes ddport connect to 127.0.0.1:PORT (nothing listens there: 502) and
write an access-log line naming that target. The restart must log the
journal's replay, with no damage reported beyond a torn tail, and take a
fresh update. Two kill/restart cycles run over one state_dir."""

import base64
import os
import random
import re
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

N_DEVICES = 8  # one client thread each; the even ones keep their connection
SECRET = "fleet-s3cret"
# Ports the devices move through: above the ephemeral range (32768-60999)
# and the ports free_port() hands out (10000-32767), so nothing of ours
# listens there and the proxy's connection is refused.
FIRST_PORT = 61000
LAST_PORT = 65535
CYCLES = 2
STREAM_S = 30.0  # a bound only: the kill normally comes after want_acks answers
RNG = random.Random(int(os.environ.get("DDTEST_SEED", "20240611")))

CONFIG = """\
workers: 2
state_dir: {state_dir}
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{proxy_port}}}
proxy:
  timeouts: {{peek: 5s, connect: 5s, idle: 1m}}
  allow_targets: [127.0.0.0/8]
  access_log: {access_log}
update:
  listen: [127.0.0.1:{update_port}]
  limits: {{updates_per_minute: 0}}
accounts:
  fleet: {{secret: "{secret_hash}"}}
devices:
{devices}"""

REPLAY_RE = re.compile(r" info updates: journal in (?P<dir>\S+): (?P<devices>\d+) devices from "
                       r"(?P<snapshot>\d+) snapshot and (?P<log>\d+) log records$", re.M)
TORN_RE = re.compile(r" warn journal: \S+: a record (header )?is cut short at offset \d+; ")


def device_name(k):
    return "dev%d.ddport.test" % k


class Device:
    """What the client side knows of one device's updates."""

    def __init__(self, k):
        self.k = k
        self.acked = FIRST_PORT  # the YAML's port until an update is answered good
        self.in_flight = None  # sent, no complete answer yet
        self.next_port = FIRST_PORT + 1
        self.ever_acked = False
        self.maybe_written = False  # acked or in flight at some point


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    secret_hash = ddtest.hash_secret(SECRET)
    env.proxy_port = ddtest.free_port(udp_too=False)
    env.update_port = ddtest.free_port(udp_too=False)
    env.state_dir = os.path.join(env.dir, "state")
    env.access_log = os.path.join(env.dir, "access.log")
    devices = "".join("  %s: {owner: fleet, address: 127.0.0.1, ports: {http: %d}}\n"
                      % (device_name(k), FIRST_PORT) for k in range(N_DEVICES))
    env.config = ddtest.write_file(env.dir, "ddport.yaml", CONFIG.format(
        state_dir=env.state_dir, proxy_port=env.proxy_port, update_port=env.update_port,
        access_log=env.access_log, secret_hash=secret_hash, devices=devices))
    env.auth = base64.b64encode(("fleet:" + SECRET).encode()).decode()
    env.runs = 0
    return env


def teardown(env):
    env.tmp.cleanup()


def start_ddport(env):
    env.runs += 1
    d = ddtest.Ddport(env.config, env.dir, tcp_ports=[env.proxy_port, env.update_port],
                      name="ddport%d" % env.runs)
    return d.start()


def update_request(env, dev, port, keep_alive):
    return ("GET /nic/update?hostname=%s&myip=127.0.0.1&port=%d HTTP/1.1\r\n"
            "Host: 127.0.0.1:%d\r\n"
            "Authorization: Basic %s\r\n"
            "User-Agent: ddport-crash-test/1\r\n"
            "%s\r\n" % (device_name(dev.k), port, env.update_port, env.auth,
                        "" if keep_alive else "Connection: close\r\n")).encode()


def update_once(env, dev, port):
    """One update on its own connection; returns the reply's body."""
    with ddtest.RawConn(env.update_port, timeout=10) as conn:
        conn.send(update_request(env, dev, port, keep_alive=False))
        resp = conn.read_response(overall=15)
    check_eq(resp.status, 200, "HTTP status of the update of %s to port %d" % (device_name(dev.k), port))
    return resp.body.decode("latin-1")


# ---- the stream -------------------------------------------------------------


class Client(threading.Thread):
    """Updates one device sequentially, a new port each time, until told to
    stop or until the connection fails (the kill)."""

    def __init__(self, env, dev, keep_alive, lock, counter):
        super().__init__(daemon=True)
        self.env, self.dev, self.keep_alive = env, dev, keep_alive
        self.lock, self.counter = lock, counter
        self.stop_flag = threading.Event()
        self.unexpected = []  # replies that were neither good nor a dead connection
        self.ended_by = None

    def run(self):
        conn = None
        try:
            for _ in range(LAST_PORT - FIRST_PORT):
                if self.stop_flag.is_set() or self.dev.next_port > LAST_PORT:
                    self.ended_by = "stopped"
                    return
                port = self.dev.next_port
                try:
                    if conn is None:
                        conn = ddtest.RawConn(self.env.update_port, timeout=10)
                    with self.lock:
                        self.dev.in_flight = port
                        self.dev.maybe_written = True
                        self.dev.next_port = port + 1
                    conn.send(update_request(self.env, self.dev, port, self.keep_alive))
                    resp = conn.read_response(overall=15)
                except (OSError, ddtest.Failure) as exc:  # ddport died under us
                    self.ended_by = "%s: %s" % (type(exc).__name__, exc)
                    return
                body = resp.body.decode("latin-1")
                if resp.status != 200 or body != "good 127.0.0.1\n":
                    self.unexpected.append("port %d: HTTP %d %r" % (port, resp.status, body))
                    self.ended_by = "unexpected reply"
                    return
                with self.lock:
                    self.dev.acked = port
                    self.dev.in_flight = None
                    self.dev.ever_acked = True
                    self.counter[0] += 1
                if not self.keep_alive or resp.header("Connection") == "close":
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()


def stream_and_kill(env, d, devices, want_acks):
    """Runs a client per device against d, kills d with SIGKILL once
    want_acks updates were answered good (or after STREAM_S), waits for the
    clients to notice and returns the number of acks."""
    lock = threading.Lock()
    counter = [0]
    for dev in devices:
        dev.in_flight = None
    clients = [Client(env, dev, dev.k % 2 == 0, lock, counter) for dev in devices]
    for c in clients:
        c.start()
    try:
        deadline = time.monotonic() + STREAM_S
        for _ in range(int(STREAM_S / 0.002) + 1):
            with lock:
                acks = counter[0]
            if acks >= want_acks or time.monotonic() > deadline:
                break
            if not any(c.is_alive() for c in clients):
                break
            time.sleep(0.002)
        alive = sum(c.is_alive() for c in clients)
        d.proc.kill()  # SIGKILL, by PID
        rc = d.proc.wait(timeout=10)
        ddtest.stop_process(d.proc)
    finally:
        for c in clients:
            c.stop_flag.set()
        for c in clients:
            c.join(timeout=30)
    # Counted once the clients are done: an answer that was already in a
    # client's socket when ddport died is still read, and counted, after
    # the kill.
    with lock:
        acks = counter[0]
    check(not any(c.is_alive() for c in clients), "a client thread did not end")
    problems = [u for c in clients for u in c.unexpected]
    check_eq(problems, [], "replies other than good during the stream")
    check_eq(rc, -9, "ddport's exit status (killed by SIGKILL)")
    check(alive == len(clients), "only %d of %d clients were still updating at the kill (ended by: %s)"
          % (alive, len(clients), [c.ended_by for c in clients]))
    check(acks >= 20, "only %d updates answered good before the kill" % acks)
    return acks


# ---- what the restarted ddport has in force ---------------------------------


def ports_in_force(env, devices):
    """{k: port} as the proxy sees it: one request per device through the
    http listener, and the target of its access-log line."""
    with open(env.access_log, "rb") as f:
        offset = len(f.read())
    statuses = {}
    for dev in devices:
        with ddtest.RawConn(env.proxy_port, timeout=10) as conn:
            conn.send(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                       % device_name(dev.k)).encode())
            statuses[dev.k] = conn.read_response(overall=15).status
    # A line is written when its connection ends: wait for all of them.
    pattern = re.compile(r" access .*\bname=(dev\d+)\.ddport\.test target=127\.0\.0\.1:(\d+) ")
    found = {}
    deadline = time.monotonic() + 10
    for _ in range(1000):
        with open(env.access_log, "rb") as f:
            text = f.read()[offset:].decode("utf-8", "replace")
        found = {}
        for m in pattern.finditer(text):
            k = int(m.group(1)[3:])
            check(k not in found, "two access-log lines for %s: %s" % (m.group(1), text))
            found[k] = int(m.group(2))
        if len(found) == len(devices) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    check_eq(sorted(found), [dev.k for dev in devices],
             "devices with an access-log line after the probes (log: %s)" % ddtest._one_line(text)[-600:])
    for dev in devices:
        # 502 unless something outside this test listens on that port.
        if not ddtest.tcp_answers(found[dev.k]):
            check_eq(statuses[dev.k], 502, "status through the proxy for %s (port %d, nothing there)"
                     % (device_name(dev.k), found[dev.k]))
    return found


def check_restart_log(env, d, devices, expected_records):
    """The restarted ddport's log: the replay line with the right counts,
    no damage reported but a torn tail."""
    log = d.stderr_text()
    m = REPLAY_RE.search(log)
    check(m is not None, "no replay line in the log of the restart: %s" % d.stderr_tail())
    check_eq(m.group("dir"), env.state_dir, "the state_dir replayed")
    n_devices, snap, records = (int(m.group(k)) for k in ("devices", "snapshot", "log"))
    low = sum(dev.ever_acked for dev in devices)
    high = sum(dev.maybe_written for dev in devices)
    check(low <= n_devices <= high, "%d devices replayed; expected %d..%d (acked..acked or in flight)"
          % (n_devices, low, high))
    if snap == 0:
        # No compaction yet: one log record per good answer, plus one per
        # request in flight at a kill whose port came back in force (it is
        # the device's newest record), nothing else.
        check_eq(records, expected_records, "log records replayed (good answers + in-flight ones "
                 "in force after the restart)")
    bad = [line for line in log.splitlines()
           if (" error " in line or " warn " in line) and not TORN_RE.search(line)]
    check_eq(bad, [], "errors and warnings in the log of the restart")
    torn = [line for line in log.splitlines() if TORN_RE.search(line)]
    if torn:
        print("# replay reported a torn tail: %s" % torn[0].split(" journal: ", 1)[1])
    return records


def t_kill9_mid_stream(env):
    devices = [Device(k) for k in range(N_DEVICES)]
    records_written = 0
    d = start_ddport(env)
    try:
        for cycle in range(1, CYCLES + 1):
            want = RNG.randint(200, 500)
            acks = stream_and_kill(env, d, devices, want)
            snapshot = {dev.k: (dev.acked, dev.in_flight) for dev in devices}
            d = start_ddport(env)
            found = ports_in_force(env, devices)
            wrong = []
            for dev in devices:
                acked, in_flight = snapshot[dev.k]
                allowed = {acked} if in_flight is None else {acked, in_flight}
                if found[dev.k] not in allowed:
                    wrong.append("%s: port %d in force, expected %s"
                                 % (device_name(dev.k), found[dev.k], " or ".join(map(str, sorted(allowed)))))
            check_eq(wrong, [], "ports in force after kill -9 number %d" % cycle)
            landed = sum(1 for dev in devices if snapshot[dev.k][1] is not None
                         and found[dev.k] == snapshot[dev.k][1])
            records_written += acks + landed
            records = check_restart_log(env, d, devices, records_written)
            print("# cycle %d: %d updates answered good before the kill (wanted %d), %d in flight, "
                  "%d of those in force after the restart; %d log records replayed"
                  % (cycle, acks, want, sum(v[1] is not None for v in snapshot.values()), landed, records))
            # The next cycle continues from what is in force.
            for dev in devices:
                dev.acked = found[dev.k]
                dev.ever_acked = dev.ever_acked or found[dev.k] != FIRST_PORT

        # A fresh update after the last restart is taken, and routes.
        dev = devices[0]
        port = dev.next_port
        dev.next_port += 1
        check_eq(update_once(env, dev, port), "good 127.0.0.1\n", "a fresh update after the restart")
        check_eq(update_once(env, dev, port), "nochg 127.0.0.1\n", "the same update again")
        check_eq(ports_in_force(env, [dev])[dev.k], port, "the port in force after the fresh update")
        check_eq(d.stop(), 0, "ddport's exit status after SIGTERM (log: %s)" % d.stderr_tail())
    finally:
        d.stop()


CASES = [
    ("kill -9 mid-stream, twice: each device's port is the last acknowledged or the one in flight",
     t_kill9_mid_stream),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
