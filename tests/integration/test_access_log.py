#!/usr/bin/python3
"""The access log in a file: one line per connection, reopened on SIGUSR1
after rotation, and a clear start-up error when the file cannot be opened."""

import os
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{port}}}
proxy:
  allow_targets: [127.0.0.0/8]
  access_log: {log}
devices:
  demo.ddport.test: {{address: 127.0.0.1, ports: {{http: {backend}}}}}
"""


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.backend = ddtest.Backend()
    return env


def teardown(env):
    env.backend.stop()
    env.tmp.cleanup()


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for(path, text, tries=50):
    for _ in range(tries):
        if text in read(path):
            return True
        time.sleep(0.1)
    return False


def request(env, port, host):
    return ddtest.curl(env.dir, "http://127.0.0.1:%d/" % port, ["-H", "Host: " + host])


def test_file_and_rotation(env):
    log = os.path.join(env.dir, "access.log")
    port = ddtest.free_port(udp_too=False)
    config = ddtest.write_file(env.dir, "rot.yaml", CONFIG.format(
        port=port, log=log, backend=env.backend.port))
    d = ddtest.Ddport(config, env.dir, tcp_ports=[port], name="rot").start()
    try:
        check_eq(request(env, port, "demo.ddport.test").status, 200, "first request")
        check(wait_for(log, "name=demo.ddport.test"), "no access line in the file")
        check("result=routed" in read(log), "the line records the result")
        check("access visitor=" not in d.stderr_text(), "access lines also went to stderr")
        os.rename(log, log + ".1")
        d.proc.send_signal(signal.SIGUSR1)
        check(wait_for(d.stderr_path, "access log reopened"), "no reopen logged")
        check_eq(request(env, port, "nobody.ddport.test").status, 404, "second request")
        check(wait_for(log, "name=nobody.ddport.test"), "no line in the reopened file")
        check("nobody" not in read(log + ".1"), "a line went to the rotated file")
        check("demo.ddport.test" in read(log + ".1"), "the rotated file kept its lines")
    finally:
        check_eq(d.stop(), 0, "ddport exit status after SIGTERM")


def test_unwritable_path(env):
    port = ddtest.free_port(udp_too=False)
    log = os.path.join(env.dir, "no-such-dir", "access.log")
    config = ddtest.write_file(env.dir, "bad.yaml", CONFIG.format(
        port=port, log=log, backend=env.backend.port))
    proc = ddtest.run([ddtest.DDPORT, "serve", "-c", config], timeout=30)
    check_eq(proc.returncode, 1, "exit status with an unwritable access log")
    check("access_log %s" % log in proc.stderr and "No such file" in proc.stderr,
          "message names the file and the reason: %r" % proc.stderr[-300:])


def test_off(env):
    port = ddtest.free_port(udp_too=False)
    config = ddtest.write_file(env.dir, "off.yaml", CONFIG.format(
        port=port, log="off", backend=env.backend.port))
    d = ddtest.Ddport(config, env.dir, tcp_ports=[port], name="off").start()
    try:
        check_eq(request(env, port, "demo.ddport.test").status, 200, "a routed request")
        check_eq(request(env, port, "nobody.ddport.test").status, 404, "an unknown name")
    finally:
        check_eq(d.stop(), 0, "ddport exit status after SIGTERM")
    check("access" not in d.stderr_text(), "access lines written with access_log: off")


CASES = [
    ("access_log: off writes no access lines", test_off),
    ("access lines go to the file and follow a SIGUSR1 reopen", test_file_and_rotation),
    ("an access log that cannot be opened stops serve with a clear error",
     test_unwritable_path),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
