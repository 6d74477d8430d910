#!/usr/bin/python3
"""ddport's command line: --help, --version, usage errors, and `serve`
failing cleanly on a broken config or a port already in use."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    return env


def teardown(env):
    env.tmp.cleanup()


def project_version():
    with open(os.path.join(ddtest.SOURCE, "meson.build"), encoding="utf-8") as f:
        m = re.search(r"version\s*:\s*'([^']+)'", f.read())
    check(m, "no version in meson.build")
    return m.group(1)


def fresh_config(env, name):
    ports = dict(proxy_port=ddtest.free_port(), dns_port=ddtest.free_port(),
                 backend_port=ddtest.free_port(), dead_port=ddtest.free_port())
    path = ddtest.write_file(env.dir, name, ddtest.config_text(**ports))
    return path, ports


def serve_until_exit(env, path, name, timeout=15):
    """Runs `ddport serve -c path`, expecting it to exit by itself within
    timeout seconds. Returns (status, stderr); stops it and fails if it keeps
    running."""
    d = ddtest.Ddport(path, env.dir, name=name)
    with open(d.stdout_path, "wb") as out, open(d.stderr_path, "wb") as err:
        d.proc = subprocess.Popen([ddtest.DDPORT, "serve", "-c", path], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=err, cwd=env.dir)
    ddtest._live.append(d.proc)
    try:
        try:
            rc = d.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ddtest.Failure("ddport serve kept running for %ss instead of exiting; stderr: %s"
                                 % (timeout, d.stderr_tail()))
    finally:
        ddtest.stop_process(d.proc)
    return rc, d.stderr_text()


def t_help(env):
    proc = ddtest.run([ddtest.DDPORT, "--help"])
    check_eq(proc.returncode, 0, "--help exit status (stderr %r)" % proc.stderr[:200])
    for word in ("serve", "check"):
        check(word in proc.stdout, "--help output on stdout does not mention %r: %r" % (word, proc.stdout[:400]))


def t_version(env):
    proc = ddtest.run([ddtest.DDPORT, "--version"])
    check_eq(proc.returncode, 0, "--version exit status")
    check_eq(proc.stdout.strip(), "ddport " + project_version(), "--version output")


def expect_usage_error(args, bad):
    proc = ddtest.run([ddtest.DDPORT] + args, timeout=15)
    check_eq(proc.returncode, 2, "exit status of ddport %s (stderr %r)" % (" ".join(args), proc.stderr[:200]))
    err = proc.stderr
    check(bad in err, "stderr does not name %r: %r" % (bad, err[:300]))
    # a usage message, or at least the GNU-style pointer to it
    check("usage" in err.lower() or "--help" in err,
          "stderr has neither a usage message nor a pointer to --help: %r" % err[:300])


def t_unknown_option(env):
    expect_usage_error(["--no-such-option"], "--no-such-option")


def t_unknown_command(env):
    expect_usage_error(["frobnicate"], "frobnicate")


def t_serve_unknown_option(env):
    expect_usage_error(["serve", "--no-such-option"], "--no-such-option")


def t_serve_broken(env):
    path, _ = fresh_config(env, "broken.yaml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    check(text.count("workers: 1\n") == 1, "test bug: base config changed")
    text = text.replace("workers: 1\n", "workers: lots\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    line, col = ddtest.position_of(text, "lots")
    rc, err = serve_until_exit(env, path, "serve-broken")
    check_eq(rc, 1, "exit status (stderr: %s)" % ddtest._one_line(err)[:300])
    got = [(d[0], d[1]) for d in ddtest.diagnostics(err, path)]
    check((line, col) in got, "no %s:%d:%d: diagnostic on stderr; got %s (stderr: %s)"
          % (path, line, col, got, ddtest._one_line(err)[:300]))


def t_serve_port_in_use(env):
    path, ports = fresh_config(env, "busy.yaml")
    port = ports["proxy_port"]
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        rc, err = serve_until_exit(env, path, "serve-busy")
    finally:
        blocker.close()
    check(rc != 0, "ddport serve exited 0 although 127.0.0.1:%d was taken" % port)
    check(rc > 0, "ddport serve died from signal %d instead of exiting with an error" % -rc)
    low = err.lower()
    check("in use" in low, "stderr does not say the address is in use: %s" % ddtest._one_line(err)[:300])
    check(str(port) in err, "stderr does not name port %d: %s" % (port, ddtest._one_line(err)[:300]))


def t_serve_dns_port_in_use(env):
    path, ports = fresh_config(env, "busy-dns.yaml")
    port = ports["dns_port"]
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        blocker.bind(("127.0.0.1", port))
        rc, err = serve_until_exit(env, path, "serve-busy-dns")
    finally:
        blocker.close()
    check(rc != 0, "ddport serve exited 0 although UDP 127.0.0.1:%d was taken" % port)
    check(rc > 0, "ddport serve died from signal %d instead of exiting with an error" % -rc)
    low = err.lower()
    check("in use" in low, "stderr does not say the address is in use: %s" % ddtest._one_line(err)[:300])
    check(str(port) in err, "stderr does not name port %d: %s" % (port, ddtest._one_line(err)[:300]))


def reuseport_socket(kind, port):
    """A socket of this test's user bound to 127.0.0.1:port with
    SO_REUSEPORT, as a second ddport's would be: on their own, ddport's
    sockets would join it and share the address."""
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    if kind == socket.SOCK_STREAM:
        s.listen(1)
    return s


def t_serve_reuseport_squatter(env):
    for kind, key, proto in ((socket.SOCK_DGRAM, "dns_port", "udp"),
                             (socket.SOCK_STREAM, "proxy_port", "tcp")):
        path, ports = fresh_config(env, "share-%s.yaml" % proto)
        port = ports[key]
        squatter = reuseport_socket(kind, port)
        try:
            rc, err = serve_until_exit(env, path, "serve-share-%s" % proto)
        finally:
            squatter.close()
        check_eq(rc, 1, "%s 127.0.0.1:%d held with SO_REUSEPORT: exit status (stderr: %s)"
                 % (proto, port, ddtest._one_line(err)[:300]))
        check("127.0.0.1:%d" % port in err and "address already in use" in err,
              "stderr does not name the %s address in use: %s" % (proto, ddtest._one_line(err)[:300]))
        check("ddport serving" not in err, "it started serving: %s" % ddtest._one_line(err)[:300])


def t_serve_second_instance(env):
    path, ports = fresh_config(env, "twice.yaml")
    first = ddtest.Ddport(path, env.dir, tcp_ports=[ports["proxy_port"]],
                          udp_ports=[ports["dns_port"]], name="serve-first")
    try:
        first.start()
        rc, err = serve_until_exit(env, path, "serve-second")
        check_eq(rc, 1, "the second ddport on the same config: exit status (stderr: %s)"
                 % ddtest._one_line(err)[:300])
        for what in ("listener http: cannot listen on 127.0.0.1:%d: address already in use"
                     % ports["proxy_port"],
                     "dns: cannot listen on 127.0.0.1:%d (udp): address already in use"
                     % ports["dns_port"],
                     "dns: cannot listen on 127.0.0.1:%d: address already in use"
                     % ports["dns_port"],
                     "is ddport already running?"):
            check(what in err, "stderr lacks %r: %s" % (what, ddtest._one_line(err)[:400]))
        # The first one answers every query: nothing went to the second.
        answered = sum(ddtest.udp_dns_answers(ports["dns_port"], timeout=2) for _ in range(20))
        check_eq(answered, 20, "queries the first ddport answered of 20")
        check(first.proc.poll() is None, "the first ddport exited")
        rc = first.stop()
        check_eq(rc, 0, "the first ddport's exit status")
    finally:
        first.stop(sig=signal.SIGKILL)


def t_sigint(env):
    path, ports = fresh_config(env, "sigint.yaml")
    d = ddtest.Ddport(path, env.dir, tcp_ports=[ports["proxy_port"]], udp_ports=[ports["dns_port"]],
                      name="serve-sigint")
    try:
        d.start()
        rc = d.stop(sig=signal.SIGINT)
        check(rc is not None, "ddport did not exit within 15 s of SIGINT (killed)")
        check_eq(rc, 0, "exit status after SIGINT")
    finally:
        d.stop(sig=signal.SIGKILL)


def t_sigterm_early(env):
    # A supervisor may stop ddport the moment its ports answer: SIGTERM must
    # then still be a graceful stop (exit 0), not the default signal death.
    # Several workers widen the window between the first bound socket and
    # the rest of startup.
    for attempt in range(5):
        path, ports = fresh_config(env, "early%d.yaml" % attempt)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace("workers: 1\n", "workers: 4\n"))
        proc = subprocess.Popen([ddtest.DDPORT, "serve", "-c", path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=env.dir)
        ddtest._live.append(proc)
        try:
            deadline = time.monotonic() + 15
            for _ in range(20000):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                if ddtest.tcp_answers(ports["proxy_port"], timeout=0.2):
                    break
                time.sleep(0.0005)
            check(proc.poll() is None, "ddport serve exited early with status %s" % proc.returncode)
            rc = ddtest.stop_process(proc, signal.SIGTERM)
        finally:
            ddtest.stop_process(proc, signal.SIGKILL)
        check(rc is not None, "attempt %d: ddport did not exit within 15 s of SIGTERM" % (attempt + 1))
        check(rc == 0, "attempt %d: SIGTERM sent as soon as the proxy port accepted: exit status %s%s"
              % (attempt + 1, rc, " (killed by the signal: no handler installed yet)" if rc < 0 else ""))


CASES = [
    ("--help exits 0 and lists the commands", t_help),
    ("--version prints the project version", t_version),
    ("unknown option exits 2 with usage", t_unknown_option),
    ("unknown command exits 2 with usage", t_unknown_command),
    ("serve with an unknown option exits 2 with usage", t_serve_unknown_option),
    ("serve with a broken config exits 1 with FILE:LINE:COLUMN", t_serve_broken),
    ("serve on a TCP port in use exits non-zero, saying so", t_serve_port_in_use),
    ("serve on a UDP DNS port in use exits non-zero, saying so", t_serve_dns_port_in_use),
    ("serve refuses addresses another socket shares by SO_REUSEPORT", t_serve_reuseport_squatter),
    ("a second serve on the same config exits 1; the first serves on", t_serve_second_instance),
    ("serve exits 0 on SIGINT", t_sigint),
    ("serve exits 0 on SIGTERM sent as soon as its port answers", t_sigterm_early),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
