#!/usr/bin/python3
"""dnsperf against a real `ddport serve`, as a correctness check only (no
timing is asserted): every query answered, none lost, and each name gets
the rcode it must, over UDP and over TCP. Loopback only."""

import os
import re
import shutil
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

DNSPERF = shutil.which("dnsperf") or "/usr/bin/dnsperf"
RUNS = 200  # passes over the query file

# name, type -> rcode; the mix of the benchmark (existing, NODATA, NXDOMAIN)
QUERIES = [
    ("demo.ddport.test", "A", "NOERROR"),
    ("demo.ddport.test", "AAAA", "NOERROR"),
    ("a.wild.ddport.test", "A", "NOERROR"),
    ("demo.ddport.test", "MX", "NOERROR"),
    ("ddport.test", "SOA", "NOERROR"),
    ("ddport.test", "NS", "NOERROR"),
    ("nobody.ddport.test", "A", "NXDOMAIN"),
    ("nobody.ddport.test", "AAAA", "NXDOMAIN"),
    ("example.com", "A", "REFUSED"),
]


class Env:
    pass


def setup():
    ddtest.require_binary()
    if not os.access(DNSPERF, os.X_OK):
        raise RuntimeError("dnsperf not installed (package dnsperf; scripts/setup installs it)")
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.proxy_port = ddtest.free_port()
    env.dns_port = ddtest.free_port()
    text = ddtest.config_text(env.proxy_port, env.dns_port, env.proxy_port, env.proxy_port)
    text = text.replace("workers: 1\n", "workers: 2\n", 1)
    path = ddtest.write_file(env.dir, "ddport.yaml", text)
    env.queries = ddtest.write_file(env.dir, "queries.txt",
                                    "".join("%s %s\n" % (n, t) for n, t, _ in QUERIES))
    env.ddport = ddtest.Ddport(path, env.dir, tcp_ports=[env.proxy_port, env.dns_port],
                               udp_ports=[env.dns_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        if env.ddport.running():
            env.ddport.stop()
    finally:
        env.tmp.cleanup()


def dnsperf(env, mode):
    # -l bounds the run's time whatever happens; -t the wait per query.
    proc = ddtest.run([DNSPERF, "-m", mode, "-s", "127.0.0.1", "-p", str(env.dns_port),
                       "-d", env.queries, "-n", str(RUNS), "-l", "60", "-t", "5", "-c", "4"],
                      timeout=120)
    out = proc.stdout + proc.stderr
    check_eq(proc.returncode, 0, "dnsperf -m %s exit status: %s" % (mode, out[-300:]))

    def number(label):
        m = re.search(r"%s:\s+(\d+)" % label, out)
        check(m, "no '%s' in dnsperf's output: %s" % (label, out[-400:]))
        return int(m.group(1))

    total = RUNS * len(QUERIES)
    check_eq(number("Queries sent"), total, mode + ": queries sent")
    check_eq(number("Queries completed"), total, mode + ": queries completed")
    check_eq(number("Queries lost"), 0, mode + ": queries lost")
    m = re.search(r"Response codes:\s+(.*)", out)
    check(m, "no response codes in dnsperf's output")
    got = {code: int(n) for code, n in re.findall(r"([A-Z]+) (\d+) \(", m.group(1))}
    want = {}
    for _, _, rcode in QUERIES:
        want[rcode] = want.get(rcode, 0) + RUNS
    check_eq(got, want, mode + ": answers per rcode")


def t_udp(env):
    dnsperf(env, "udp")


def t_tcp(env):
    dnsperf(env, "tcp")


def t_stop(env):
    check(env.ddport.running(), "ddport exited under load; stderr: %s" % env.ddport.stderr_tail())
    check_eq(env.ddport.stop(), 0, "exit status after SIGTERM")


CASES = [
    ("dnsperf over UDP: all answered, none lost, rcodes right", t_udp),
    ("dnsperf over TCP: all answered, none lost, rcodes right", t_tcp),
    ("ddport still running, exits 0", t_stop),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
