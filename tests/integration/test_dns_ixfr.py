#!/usr/bin/python3
"""The serial rises once per batch of changes (dns.serial_batch), and IXFR
(RFC 1995) sends what each batch changed, checked with dig: the old SOA,
the names removed, the new SOA, the names added. A serial older than the
history gets the whole zone. Registry changes come from SIGHUP reloads.
Loopback only; ddport is stopped by its PID."""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

# Long enough that a burst of reloads always lands inside one batch.
BATCH_S = 5

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{http_port}}}
proxy: {{allow_targets: [127.0.0.0/8], access_log: off}}
reload: {{watch: false}}
dns:
  listen: [127.0.0.1:{dns_port}]
  serial_batch: {batch}s
  zones:
    - name: ddport.test
      proxy: [127.0.0.1, "::1"]
      nameservers: [ns1.ddport.test]
      glue: {{ns1.ddport.test: [127.0.0.1]}}
      allow_transfer: [127.0.0.1/32]
devices:
{devices}"""

DEVICE = "  {name}.ddport.test: {{address: 127.0.0.1, ports: {{http: 10080}}}}\n"


class Env:
    pass


def write_config(env, names):
    devices = "".join(DEVICE.format(name=n) for n in names)
    return ddtest.write_file(env.dir, "ddport.yaml", CONFIG.format(
        http_port=env.http_port, dns_port=env.dns_port, batch=BATCH_S, devices=devices))


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.http_port = ddtest.free_port(udp_too=False)
    env.dns_port = ddtest.free_port()
    env.serials = {}
    config = write_config(env, ["base"])
    env.ddport = ddtest.Ddport(config, env.dir, tcp_ports=[env.http_port, env.dns_port],
                               udp_ports=[env.dns_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        ddtest.stop_checked(env.ddport)
    finally:
        env.tmp.cleanup()


def soa_serial(env):
    res = ddtest.dig(env.dns_port, "ddport.test", "SOA", extra=["+norec"])
    soas = res.records("answer", "SOA")
    check(res.status == "NOERROR" and soas, "no SOA: %s" % res.describe())
    return int(soas[0][4][2])


def reload(env, names):
    write_config(env, names)
    env.ddport.reload()


def next_serial(env, old, timeout=3 * BATCH_S + 5):
    """Waits (bounded) for the SOA serial to move past old."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        serial = soa_serial(env)
        if serial != old:
            return serial
        time.sleep(0.1)
    raise ddtest.Failure("serial still %d after %d s" % (old, timeout))


def transfer(env, query):
    """[(owner, type, data)] of every record dig prints for query (e.g.
    "ixfr=123"), over TCP."""
    proc = ddtest.run([ddtest.DIG, "@127.0.0.1", "-p", str(env.dns_port), "+tcp",
                       "+tries=1", "+time=5", "+noall", "+answer", "ddport.test", query],
                      timeout=30)
    check_eq(proc.returncode, 0, "dig %s exit status (%s)" % (query, proc.stdout))
    out = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 5 or line.startswith(";"):
            continue
        owner, rtype = parts[0].rstrip(".").lower(), parts[3]
        data = parts[6] if rtype == "SOA" else parts[4]
        out.append((owner, rtype, data))
    check(out, "dig %s printed no records: %r" % (query, proc.stdout))
    return out


def soa(serial):
    return ("ddport.test", "SOA", str(serial))


def addresses(*names):
    out = []
    for n in names:
        out += [(n + ".ddport.test", "A", "127.0.0.1"), (n + ".ddport.test", "AAAA", "::1")]
    return out


def t_burst_is_one_step(env):
    s0 = soa_serial(env)
    reload(env, ["base", "one"])
    s1 = next_serial(env, s0)
    check_eq(s1, s0 + 1, "serial after the first reload")
    # Three more reloads at once: the registry takes each (the names
    # answer at once), the serial moves once for them all.
    reload(env, ["base", "one", "two"])
    reload(env, ["base", "one", "two", "three"])
    reload(env, ["base", "one", "two", "three", "four"])
    res = ddtest.dig(env.dns_port, "four.ddport.test", "A", extra=["+norec"])
    check_eq(res.status, "NOERROR", "four.ddport.test right after the reload")
    check_eq(soa_serial(env), s1, "serial within the batch")
    s2 = next_serial(env, s1)
    check_eq(s2, s1 + 1, "serial after three reloads in one batch")
    env.serials.update(s0=s0, s1=s1, s2=s2)


def t_ixfr_one_batch(env):
    s1, s2 = env.serials["s1"], env.serials["s2"]
    got = transfer(env, "ixfr=%d" % s1)
    want = [soa(s2), soa(s1), soa(s2)] + addresses("four", "three", "two") + [soa(s2)]
    check_eq(got, want, "IXFR from %d" % s1)
    check("IXFR of ddport.test serial %d to 127.0.0.1" % s2 in env.ddport.stderr_text()
          and "incremental from serial %d" % s1 in env.ddport.stderr_text(),
          "IXFR not logged: %s" % env.ddport.stderr_tail())


def t_ixfr_two_batches(env):
    s0, s1, s2 = env.serials["s0"], env.serials["s1"], env.serials["s2"]
    got = transfer(env, "ixfr=%d" % s0)
    want = ([soa(s2), soa(s0), soa(s1)] + addresses("one")
            + [soa(s1), soa(s2)] + addresses("four", "three", "two") + [soa(s2)])
    check_eq(got, want, "IXFR from %d" % s0)


def t_ixfr_removal(env):
    s2 = env.serials["s2"]
    reload(env, ["base", "one", "three", "four"])
    s3 = next_serial(env, s2)
    got = transfer(env, "ixfr=%d" % s2)
    check_eq(got, [soa(s3), soa(s2)] + addresses("two") + [soa(s3), soa(s3)],
             "IXFR from %d" % s2)
    check_eq(transfer(env, "ixfr=%d" % s3), [soa(s3)], "IXFR from the current serial")
    env.serials["s3"] = s3


def t_ixfr_older_than_history(env):
    s0, s3 = env.serials["s0"], env.serials["s3"]
    got = transfer(env, "ixfr=%d" % (s0 - 5))
    check_eq(got[0], soa(s3), "first record")
    check_eq(got[1], ("ddport.test", "NS", "ns1.ddport.test."), "second record: AXFR form")
    check_eq(got[-1], soa(s3), "last record")
    check_eq(sorted(set(r[0] for r in got if r[1] == "A")),
             ["base.ddport.test", "four.ddport.test", "ns1.ddport.test",
              "one.ddport.test", "three.ddport.test"], "names of the whole zone")
    check("whole zone (serial %d not in the history)" % (s0 - 5) in env.ddport.stderr_text(),
          "fallback not logged: %s" % env.ddport.stderr_tail())


def t_stop(env):
    check_eq(env.ddport.stop(), 0, "ddport exit status")


CASES = [
    ("a burst of reloads within serial_batch raises the serial once", t_burst_is_one_step),
    ("IXFR of one batch: old SOA, new SOA, the names added", t_ixfr_one_batch),
    ("IXFR of two batches, in order", t_ixfr_two_batches),
    ("IXFR of a removal: old SOA, the names removed, new SOA", t_ixfr_removal),
    ("IXFR from before the history: the whole zone", t_ixfr_older_than_history),
    ("ddport stops cleanly", t_stop),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
