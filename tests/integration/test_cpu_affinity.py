#!/usr/bin/python3
"""cpu_affinity against a real `ddport serve`: each worker runs on its own
CPU, and a query or connection is taken by the worker on the CPU that
received it. Over loopback the kernel handles a packet on the sender's CPU,
so the test moves its own thread from CPU to CPU and watches which worker
gives up its CPU for the exchanges (its context switches in /proc). Without cpu_affinity
the same client socket stays on one worker whichever CPU sends. Loopback
only."""

import os
import socket
import struct
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

QUERIES = 200  # per CPU, one at a time: each wakes the worker that takes it
CONNECTIONS = 40  # per CPU and listener
ORIGINAL_CPUS = sorted(os.sched_getaffinity(0))


class Env:
    pass


def config(env, affinity, workers):
    text = ddtest.config_text(env.proxy_port, env.dns_port, env.dead_port, env.dead_port)
    text = text.replace("workers: 1\n", "workers: %s\n" % workers, 1)
    if affinity is not None:
        text = text.replace("listeners:\n", "cpu_affinity: %s\nlisteners:\n" % affinity, 1)
    # 40 connections a round on stderr would only bury the log.
    return text.replace("access_log: stderr", "access_log: off", 1)


def start(env, name, affinity, workers=2):
    env.dead_port = ddtest.free_port()
    return ddtest.start_on_free_ports(env, name, lambda: config(env, affinity, workers))


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.ddport = None
    if len(ORIGINAL_CPUS) >= 2:
        env.ddport = ddtest.started(env, teardown, lambda: start(env, "ddport", "on"))
    return env


def teardown(env):
    try:
        os.sched_setaffinity(0, ORIGINAL_CPUS)
        if env.ddport is not None and env.ddport.running():
            env.ddport.stop()
    finally:
        env.tmp.cleanup()


def need_two_cpus():
    if len(ORIGINAL_CPUS) < 2:
        raise ddtest.Skip("this machine lets the test use %d CPU" % len(ORIGINAL_CPUS))


def workers_of(d):
    """{worker name: (tid, allowed CPUs)} of d's worker threads."""
    out = {}
    for tid, comm in ddtest.threads(d.proc.pid):
        if not comm.startswith("ddport-w"):
            continue
        try:
            with open("/proc/%d/task/%d/status" % (d.proc.pid, tid)) as f:
                status = f.read()
        except OSError:  # a thread that ended meanwhile
            continue
        allowed = next(line.split(":", 1)[1].strip() for line in status.splitlines()
                       if line.startswith("Cpus_allowed_list:"))
        out[comm] = (tid, allowed)
    return out


def wakeups(d):
    """{worker name: context switches so far, voluntary and not}. Both
    count: the worker that shares the client's CPU often has the client
    preempt it before it is back asleep, and then finds the next exchange
    waiting without sleeping (under ASan, 40 connections made only 5
    voluntary switches); it still gives up its CPU once per exchange."""
    out = {}
    for comm, (tid, _) in workers_of(d).items():
        with open("/proc/%d/task/%d/status" % (d.proc.pid, tid)) as f:
            out[comm] = sum(int(line.split()[1]) for line in f
                            if line.startswith(("voluntary_ctxt_switches:",
                                                "nonvoluntary_ctxt_switches:")))
    return out


def busy_worker(d, cpu, work):
    """Runs work() on cpu only; returns (the worker woken most, per-worker
    wakeups), checking that it woke for the exchanges (a wakeup may serve
    several: accept, read and close in one pass) and the others hardly at
    all. Spread by hash, connections from new ports wake each worker about
    as often."""
    os.sched_setaffinity(0, {cpu})
    try:
        before = wakeups(d)
        n = work()
        after = wakeups(d)
    finally:
        os.sched_setaffinity(0, ORIGINAL_CPUS)
    delta = {w: after[w] - before[w] for w in after}
    busiest = max(delta, key=delta.get)
    check(delta[busiest] >= max(5, n // 5),
          "from CPU %d, %d exchanges hardly woke any worker: %s" % (cpu, n, delta))
    others = sum(v for w, v in delta.items() if w != busiest)
    check(others <= delta[busiest] // 4,
          "from CPU %d, the exchanges were spread over workers: %s" % (cpu, delta))
    return busiest, delta


def udp_queries(port, sock):
    def work():
        for i in range(QUERIES):
            qid, msg = ddtest.dns_probe_query("demo.ddport.test", qtype=1, qid=i)
            sock.send(msg)
            for _ in range(4):  # bounded: skip stale answers
                data = sock.recv(4096)
                if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                    break
            else:
                raise AssertionError("query %d: no answer" % i)
        return QUERIES
    return work


def dns_tcp_queries(port):
    def work():
        for i in range(CONNECTIONS):
            qid, msg = ddtest.dns_probe_query("demo.ddport.test", qtype=1, qid=i)
            with socket.create_connection((ddtest.LOOPBACK4, port), timeout=5) as s:
                s.sendall(struct.pack("!H", len(msg)) + msg)
                head = s.recv(2)
                check(len(head) == 2, "DNS over TCP: no answer to query %d" % i)
        return CONNECTIONS
    return work


def proxy_requests(port):
    # An unknown name: the accepting worker answers itself, no device needed.
    request = b"GET / HTTP/1.1\r\nHost: nobody.ddport.test\r\nConnection: close\r\n\r\n"

    def work():
        for i in range(CONNECTIONS):
            resp = ddtest.raw_exchange(port, request)
            check(resp.status is not None and resp.status >= 400,
                  "request %d to an unknown name: %r" % (i, resp.status))
        return CONNECTIONS
    return work


def t_workers_pinned(env):
    need_two_cpus()
    workers = workers_of(env.ddport)
    check_eq(sorted(workers), ["ddport-w0", "ddport-w1"], "worker threads by name")
    check_eq([workers["ddport-w%d" % i][1] for i in range(2)],
             [str(c) for c in ORIGINAL_CPUS[:2]],
             "each worker's allowed CPUs (the i-th CPU of ddport's own mask)")
    log = env.ddport.stderr_text()
    check("cpu_affinity: workers on CPUs %d,%d" % tuple(ORIGINAL_CPUS[:2]) in log,
          "no cpu_affinity line in the log: %s" % env.ddport.stderr_tail())
    check("refused" not in log, "the kernel refused steering: %s" % env.ddport.stderr_tail())


def steered(env, work):
    """work's exchanges go to worker i when sent from the i-th CPU."""
    for i, cpu in enumerate(ORIGINAL_CPUS[:2]):
        busiest, delta = busy_worker(env.ddport, cpu, work)
        check_eq(busiest, "ddport-w%d" % i, "worker woken by exchanges from CPU %d (%s)"
                 % (cpu, delta))


def t_udp_steered(env):
    need_two_cpus()
    # One socket for both CPUs: only the CPU differs.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect((ddtest.LOOPBACK4, env.dns_port))
        steered(env, udp_queries(env.dns_port, s))


def t_dns_tcp_steered(env):
    need_two_cpus()
    steered(env, dns_tcp_queries(env.dns_port))


def t_proxy_steered(env):
    need_two_cpus()
    steered(env, proxy_requests(env.proxy_port))


def t_off_hashes(env):
    """The control: without cpu_affinity one socket's queries stay on the
    worker its addresses hash to, whichever CPU sends them."""
    need_two_cpus()
    d = start(env, "unpinned", None)
    try:
        for w, (_, allowed) in workers_of(d).items():
            check(allowed not in [str(c) for c in ORIGINAL_CPUS],
                  "%s pinned to CPU %s without cpu_affinity" % (w, allowed))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.connect((ddtest.LOOPBACK4, env.dns_port))
            first, _ = busy_worker(d, ORIGINAL_CPUS[0], udp_queries(env.dns_port, s))
            second, delta = busy_worker(d, ORIGINAL_CPUS[1], udp_queries(env.dns_port, s))
        check_eq(second, first, "worker of one socket after moving CPU (%s)" % delta)
    finally:
        check_eq(d.stop(), 0, "exit status of the unpinned ddport")


def t_more_workers_than_cpus(env):
    n = len(ORIGINAL_CPUS) + 1
    path = ddtest.write_file(env.dir, "toomany.yaml", config(env, "on", n))
    res = ddtest.run([ddtest.DDPORT, "serve", "-c", path], timeout=30)
    check_eq(res.returncode, 1, "exit status with %d workers on %d CPUs" % (n, n - 1))
    want = ("cpu_affinity: on needs a CPU for each worker: %d workers, but this process "
            "may use %d CPU" % (n, n - 1))
    check(want in res.stderr, "no clear error: %r" % res.stderr[-400:])


def t_bad_value(env):
    path = ddtest.write_file(env.dir, "bad.yaml", config(env, "sometimes", 1))
    res = ddtest.run([ddtest.DDPORT, "check", "-c", path], timeout=30)
    check_eq(res.returncode, 1, "check's exit status for cpu_affinity: sometimes")
    check("bad.yaml:" in res.stderr and "cpu_affinity" in res.stderr
          and "true or false" in res.stderr, "no clear error: %r" % res.stderr[-400:])


def t_reload_needs_restart(env):
    need_two_cpus()
    d = env.ddport
    d.check_restart_needed("cpu_affinity: on", "cpu_affinity: off", "cpu_affinity")
    check_eq(workers_of(d)["ddport-w1"][1], str(ORIGINAL_CPUS[1]),
             "worker 1's CPUs after the reload")


def t_still_running(env):
    need_two_cpus()
    check(env.ddport.running(), "ddport exited: %s" % env.ddport.stderr_tail())
    check_eq(env.ddport.stop(), 0, "exit status after SIGTERM")


CASES = [
    ("workers pinned, one per CPU, named ddport-wN", t_workers_pinned),
    ("UDP queries taken by the worker on the sender's CPU", t_udp_steered),
    ("DNS over TCP connections taken by the worker on the client's CPU", t_dns_tcp_steered),
    ("proxy connections taken by the worker on the client's CPU", t_proxy_steered),
    ("without cpu_affinity: one socket, one worker, whichever CPU", t_off_hashes),
    ("more workers than CPUs: clear error, exit 1", t_more_workers_than_cpus),
    ("cpu_affinity: sometimes is a config error", t_bad_value),
    ("reload cannot change cpu_affinity: needs a restart", t_reload_needs_restart),
    ("ddport still running, exits 0", t_still_running),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
