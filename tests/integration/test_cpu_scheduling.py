#!/usr/bin/python3
"""cpu_scheduling against a real `ddport serve`: with `batch` every worker
thread runs under SCHED_BATCH, as the kernel reports it per thread, while
the control thread keeps the normal policy; without the key, or with
`normal`, every thread is normal. Proxy and DNS answer either way. A wrong
value is a config error, and a reload cannot change it. Loopback only."""

import os
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

POLICY_NAMES = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH",
                os.SCHED_IDLE: "SCHED_IDLE", os.SCHED_FIFO: "SCHED_FIFO",
                os.SCHED_RR: "SCHED_RR"}


WORKERS_BATCH = {"ddport-w0": "SCHED_BATCH", "ddport-w1": "SCHED_BATCH"}


class Env:
    pass


def config(env, scheduling):
    text = ddtest.config_text(env.proxy_port, env.dns_port, env.backend.port, env.dead_port)
    text = text.replace("workers: 1\n", "workers: 2\n", 1)
    if scheduling is not None:
        text = text.replace("listeners:\n", "cpu_scheduling: %s\nlisteners:\n" % scheduling, 1)
    return text


def start(env, name, scheduling):
    """ddport on fresh ports, which it keeps as proxy_port and dns_port."""
    env.dead_port = ddtest.free_port()
    return ddtest.start_on_free_ports(env, name, lambda: config(env, scheduling))


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.ddport = None
    env.backend = ddtest.Backend()
    env.ddport = ddtest.started(env, teardown, lambda: start(env, "ddport", "batch"))
    return env


def teardown(env):
    try:
        if env.ddport is not None and env.ddport.running():
            env.ddport.stop()
    finally:
        env.backend.stop()
        env.tmp.cleanup()


def policies(d):
    """{thread name: policy name} of every thread of d, from the kernel."""
    out = {}
    for tid, comm in ddtest.threads(d.proc.pid):
        try:
            policy = os.sched_getscheduler(tid)
        except OSError:  # a thread that ended meanwhile
            continue
        name = comm if comm.startswith("ddport-w") else "%s[%s]" % (comm, tid)
        out[name] = POLICY_NAMES.get(policy, str(policy))
    return out


def worker_policies(d):
    return {k: v for k, v in policies(d).items() if k.startswith("ddport-w")}


def serves(env, d):
    """A proxied request reaches the backend, and DNS answers."""
    r = ddtest.curl(env.dir, "http://127.0.0.1:%d/" % d.proxy_port,
                    ["-H", "Host: demo.ddport.test"], timeout=30)
    check_eq(r.status, 200, "status of a proxied request (%s)" % r.describe())
    check_eq(r.header("X-Ddtest-Backend"), env.backend.token, "backend that answered")
    res = ddtest.dig(d.dns_port, "demo.ddport.test", "A")
    check_eq([(r[0], r[4]) for r in res.records("answer", "A")],
             [("demo.ddport.test.", ["127.0.0.1"])], "DNS answer (%s)" % res.describe())


def t_workers_batch(env):
    got = policies(env.ddport)
    check_eq(worker_policies(env.ddport), WORKERS_BATCH, "policy of the worker threads")
    others = {k: v for k, v in got.items() if not k.startswith("ddport-w")}
    check(others and all(v == "SCHED_OTHER" for v in others.values()),
          "the other threads (control loop, libuv's pool) keep the normal policy: %s" % others)
    check("cpu_scheduling: batch" in env.ddport.stderr_text(),
          "no cpu_scheduling line in the log: %s" % env.ddport.stderr_tail())
    check("cannot use cpu_scheduling" not in env.ddport.stderr_text(),
          "a worker could not switch: %s" % env.ddport.stderr_tail())


def t_batch_serves(env):
    serves(env, env.ddport)


def t_normal(env):
    """Without the key and with `normal`, no thread changes policy."""
    for name, value in (("default", None), ("normal", "normal")):
        d = start(env, name, value)
        try:
            got = policies(d)
            check(sum(k.startswith("ddport-w") for k in got) == 2,
                  "%s: two workers: %s" % (name, got))
            check(all(v == "SCHED_OTHER" for v in got.values()),
                  "%s: every thread under the normal policy: %s" % (name, got))
            check("cpu_scheduling" not in d.stderr_text(),
                  "%s: a cpu_scheduling line in the log: %s" % (name, d.stderr_tail()))
            serves(env, d)
        finally:
            check_eq(d.stop(), 0, "exit status of the %s ddport" % name)


def t_bad_value(env):
    for value, got in (("fifo", "'fifo'"), ("[batch]", "a sequence"), ("on", "'on'")):
        path = ddtest.write_file(env.dir, "bad.yaml", config(env, value))
        for command in ("check", "serve"):
            res = ddtest.run([ddtest.DDPORT, command, "-c", path], timeout=30)
            check_eq(res.returncode, 1, "%s's exit status for cpu_scheduling: %s" % (command, value))
            want = "expected 'normal' or 'batch' for 'cpu_scheduling', got %s" % got
            check("bad.yaml:" in res.stderr and want in res.stderr,
                  "%s, cpu_scheduling: %s: no clear error: %r" % (command, value, res.stderr[-400:]))


def t_reload_needs_restart(env):
    d = env.ddport
    d.check_restart_needed("cpu_scheduling: batch", "cpu_scheduling: normal", "cpu_scheduling")
    check_eq(worker_policies(d), WORKERS_BATCH, "worker policies after the reload")


def t_still_running(env):
    check(env.ddport.running(), "ddport exited: %s" % env.ddport.stderr_tail())
    serves(env, env.ddport)
    check_eq(env.ddport.stop(), 0, "exit status after SIGTERM")


CASES = [
    ("batch: workers under SCHED_BATCH, the control thread normal", t_workers_batch),
    ("batch: proxy and DNS answer", t_batch_serves),
    ("no key, or normal: every thread normal, and it serves", t_normal),
    ("cpu_scheduling: fifo, [batch], on are config errors", t_bad_value),
    ("reload cannot change cpu_scheduling: needs a restart", t_reload_needs_restart),
    ("ddport still serving, exits 0", t_still_running),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
