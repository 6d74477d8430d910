#!/usr/bin/python3
"""Registry files, accounts and `ddport hash-secret` against the real
binary: devices from files and directories named by `registry:` are
checked (FILE:LINE:COLUMN naming the right file) and served; account
secrets must be crypt(3) hashes; hash-secret prints one that crypt(3)
verifies, without echoing the secret on a terminal."""

import ctypes
import ctypes.util
import os
import pty
import select
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
    env.n = 0
    return env


def teardown(env):
    env.tmp.cleanup()


def fresh_dir(env):
    env.n += 1
    path = os.path.join(env.dir, "case%d" % env.n)
    os.makedirs(path)
    return path


def crypt(secret, setting):
    """crypt(3) from libcrypt itself (Python's crypt module is deprecated)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    out = lib.crypt(secret.encode("utf-8"), setting.encode("ascii"))
    return out.decode("ascii") if out is not None else None


def hash_secret(stdin_bytes):
    proc = ddtest.run([ddtest.DDPORT, "hash-secret"], input=stdin_bytes.decode("latin-1"))
    return proc


BASE = """\
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{proxy_port}}}
proxy:
  allow_targets: [127.0.0.0/8]
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - {{name: ddport.test, proxy: [127.0.0.1]}}
"""


def base(proxy_port=18080, dns_port=15353):
    return BASE.format(proxy_port=proxy_port, dns_port=dns_port)


def run_check(path):
    return ddtest.run([ddtest.DDPORT, "check", "-c", path], timeout=30)


def t_check_registry_files(env):
    d = fresh_dir(env)
    os.makedirs(os.path.join(d, "devices.d"))
    cfg = ddtest.write_file(d, "ddport.yaml", base() + "registry: [devices.yaml, devices.d/]\n")
    ddtest.write_file(d, "devices.yaml",
                      "accounts:\n  alice: {secret: \"%s\"}\n"
                      "devices:\n  a.ddport.test: {owner: alice, address: 127.0.0.1, ports: {http: 80}}\n"
                      % crypt("pw", "$6$salt$"))
    ddtest.write_file(d, "devices.d/10-b.yaml",
                      "devices:\n  b.ddport.test: {owner: alice, address: 127.0.0.1, ports: {http: 81}}\n")
    ddtest.write_file(d, "devices.d/20-c.yaml",
                      "devices:\n  c.ddport.test: {address: 127.0.0.1, ports: {http: 82}}\n")
    proc = run_check(cfg)
    check_eq(proc.returncode, 0, "exit status (stderr: %s)" % proc.stderr[:400])
    check("3 devices, 1 accounts, 3 registry files" in proc.stdout,
          "summary counts devices, accounts and files: %r" % proc.stdout)


def t_check_errors_name_their_file(env):
    d = fresh_dir(env)
    os.makedirs(os.path.join(d, "devices.d"))
    cfg = ddtest.write_file(d, "ddport.yaml", base() + "registry: [devices.yaml, devices.d/, gone.yaml]\n")
    first = "devices:\n  a.ddport.test: {address: 127.0.0.1, ports: {http: 80}}\n"
    ddtest.write_file(d, "devices.yaml", first)
    second = ("devices:\n"
              "  b.ddport.test: {address: 127.0.0.1, ports: {http: 0}}\n"
              "  A.ddport.test.: {address: 127.0.0.1, ports: {http: 80}}\n")
    path2 = ddtest.write_file(d, "devices.d/x.yaml", second)
    proc = run_check(cfg)
    check_eq(proc.returncode, 1, "exit status (stderr: %s)" % proc.stderr[:400])
    in_cfg = ddtest.diagnostics(proc.stderr, cfg)
    in_second = ddtest.diagnostics(proc.stderr, path2)
    text = open(cfg, encoding="utf-8").read()
    check_eq([(line, col) for line, col, _ in in_cfg], [ddtest.position_of(text, "gone.yaml")],
             "the missing file is reported where the config names it")
    check("No such file" in in_cfg[0][2], "says why: %r" % in_cfg[0][2])
    got = [(line, col) for line, col, _ in in_second]
    check_eq(got, [ddtest.position_of(second, "0}"), ddtest.position_of(second, "A.ddport")],
             "problems in %s (stderr: %s)" % (path2, proc.stderr[:600]))
    dup = in_second[1][2]
    check("duplicate device 'a.ddport.test'" in dup and os.path.join(d, "devices.yaml") + ":2:3" in dup,
          "a duplicate names both places: %r" % dup)


def t_check_refuses_plaintext(env):
    d = fresh_dir(env)
    text = (base() + "accounts:\n  alice: {secret: correct-horse-battery}\n"
            "devices:\n  a.ddport.test: {owner: alice, address: 127.0.0.1, ports: {http: 80}}\n")
    cfg = ddtest.write_file(d, "ddport.yaml", text)
    proc = run_check(cfg)
    check_eq(proc.returncode, 1, "exit status")
    diags = ddtest.diagnostics(proc.stderr, cfg)
    check_eq([(line, col) for line, col, _ in diags], [ddtest.position_of(text, "correct-horse")],
             "position of the plaintext secret")
    check("hash-secret" in diags[0][2], "tells how to make a hash: %r" % diags[0][2])
    check("correct-horse" not in proc.stderr, "the plaintext is never echoed: %r" % proc.stderr)


def t_check_unknown_owner(env):
    d = fresh_dir(env)
    text = (base() + "accounts:\n  alice: {secret: \"%s\"}\n" % crypt("pw", "$6$salt$")
            + "devices:\n  a.ddport.test: {owner: alcie, address: 127.0.0.1, ports: {http: 80}}\n")
    cfg = ddtest.write_file(d, "ddport.yaml", text)
    proc = run_check(cfg)
    check_eq(proc.returncode, 1, "exit status")
    diags = ddtest.diagnostics(proc.stderr, cfg)
    check_eq([(line, col) for line, col, _ in diags], [ddtest.position_of(text, "alcie")], "position")
    check("did you mean 'alice'" in diags[0][2], "suggests the account: %r" % diags[0][2])


def t_hash_secret_verifies(env):
    proc = hash_secret(b"s3cret passphrase\n")
    check_eq(proc.returncode, 0, "exit status (stderr %r)" % proc.stderr)
    lines = proc.stdout.splitlines()
    check_eq(len(lines), 1, "one line on stdout")
    h = lines[0]
    check(h.startswith("$y$"), "a yescrypt hash: %r" % h)
    check_eq(crypt("s3cret passphrase", h), h, "crypt(3) of the secret with the hash as setting")
    check(crypt("s3cret passphrase\n", h) != h, "the trailing newline is not part of the secret")
    again = hash_secret(b"s3cret passphrase").stdout.strip()
    check(again != h and crypt("s3cret passphrase", again) == again,
          "without a newline the same secret verifies, with a fresh salt")
    # The hash pastes into accounts and passes check.
    d = fresh_dir(env)
    cfg = ddtest.write_file(d, "ddport.yaml", base() + "accounts:\n  alice: {secret: \"%s\"}\n" % h)
    checked = run_check(cfg)
    check_eq(checked.returncode, 0, "check accepts the hash (stderr %r)" % checked.stderr[:300])


def t_hash_secret_refuses(env):
    for data, why in ((b"", "empty"), (b"\n", "empty"), (b"a" * 2000, "longer"),
                      (b"a\0b", "NUL")):
        proc = hash_secret(data)
        check_eq(proc.returncode, 1, "exit status for %r" % data[:10])
        check_eq(proc.stdout, "", "nothing on stdout for %r" % data[:10])
        check(why in proc.stderr, "says %r for %r: %r" % (why, data[:10], proc.stderr))


def t_hash_secret_tty_no_echo(env):
    """On a terminal the secret is read as one line and never echoed."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(ddtest.DDPORT, [ddtest.DDPORT, "hash-secret"])
        finally:
            os._exit(127)
    out = b""
    try:
        deadline = time.monotonic() + 20
        for _ in range(400):
            if b"Secret:" in out or time.monotonic() > deadline:
                break
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                out += os.read(fd, 4096)
        check(b"Secret:" in out, "a prompt on the terminal: %r" % out)
        os.write(fd, b"tty-secret-42\n")
        for _ in range(400):
            if time.monotonic() > deadline:
                break
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO once the child has exited
                    break
                if not chunk:
                    break
                out += chunk
                if b"$y$" in out and out.endswith(b"\n") and out.count(b"\n") >= 2:
                    break
        status = None
        for _ in range(200):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                pid = 0
                break
            time.sleep(0.05)
        check(pid == 0, "hash-secret still running after the secret was typed; output %r" % out)
        check_eq(os.waitstatus_to_exitcode(status), 0, "exit status (output %r)" % out)
        check(b"tty-secret-42" not in out, "the secret was echoed: %r" % out)
        h = [w for w in out.decode("ascii", "replace").split() if w.startswith("$y$")]
        check(h, "a hash in the output: %r" % out)
        check_eq(crypt("tty-secret-42", h[-1]), h[-1], "the hash verifies")
    finally:
        if pid:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        os.close(fd)


def t_serve_devices_from_files(env):
    d = fresh_dir(env)
    os.makedirs(os.path.join(d, "devices.d"))
    backend = ddtest.Backend()
    try:
        proxy_port, dns_port = ddtest.free_port(), ddtest.free_port()
        cfg = ddtest.write_file(d, "ddport.yaml",
                                "workers: 2\n" + base(proxy_port, dns_port) + "registry: devices.d\n")
        ddtest.write_file(d, "devices.d/cams.yaml",
                          "devices:\n  cam.ddport.test: {address: 127.0.0.1, ports: {http: %d}}\n"
                          "  Bücher.ddport.test: {address: 127.0.0.1, ports: {http: %d}}\n"
                          % (backend.port, backend.port))
        proc = ddtest.Ddport(cfg, d, tcp_ports=[proxy_port], udp_ports=[dns_port]).start()
        try:
            res = ddtest.curl(d, "http://127.0.0.1:%d/" % proxy_port, ["-H", "Host: cam.ddport.test"])
            check_eq(res.status, 200, "routed through a device from a registry file: " + res.describe())
            check_eq(res.header(ddtest.BACKEND_HEADER), backend.token, "the right backend")
            ans = ddtest.dig(dns_port, "cam.ddport.test", "A")
            check_eq(ans.status, "NOERROR", "DNS knows the device: " + ans.describe())
            # A Unicode name is served under its A-label, as browsers send it.
            idn = "xn--bcher-kva.ddport.test"
            res = ddtest.curl(d, "http://127.0.0.1:%d/" % proxy_port, ["-H", "Host: " + idn])
            check_eq(res.status, 200, "an IDN device routed by its A-label: " + res.describe())
            ans = ddtest.dig(dns_port, idn, "A")
            check_eq(ans.status, "NOERROR", "DNS answers the A-label: " + ans.describe())
        finally:
            check_eq(proc.stop(), 0, "exit status after SIGTERM")
    finally:
        backend.stop()


def serve_and_stop(env, n):
    """Serves n generated devices, checks the last one resolves, stops the
    server with SIGTERM; returns its stderr."""
    d = fresh_dir(env)
    os.makedirs(os.path.join(d, "devices.d"))
    proxy_port, dns_port = ddtest.free_port(), ddtest.free_port()
    cfg = ddtest.write_file(d, "ddport.yaml",
                            "workers: 2\n" + base(proxy_port, dns_port) + "registry: devices.d\n")
    lines = ["devices:"]
    lines += ["  d%d.ddport.test: {address: 127.0.0.1, ports: {http: 10080}}" % i
              for i in range(n)]
    ddtest.write_file(d, "devices.d/many.yaml", "\n".join(lines) + "\n")
    proc = ddtest.Ddport(cfg, d, tcp_ports=[proxy_port], udp_ports=[dns_port]).start(
        ready_timeout=60)
    try:
        ans = ddtest.dig(dns_port, "d%d.ddport.test" % (n - 1), "A")
        check_eq(ans.status, "NOERROR", "the last of %d devices resolves: %s" % (n, ans.describe()))
    finally:
        check_eq(proc.stop(), 0, "exit status after SIGTERM with %d devices" % n)
    return proc.stderr_text()


def t_serve_stop_leaves_big_table(env):
    # Up to 100,000 devices the table is freed at exit (leak checkers see
    # it); above, it is left to the kernel, which frees it at once.
    limit = 100000
    err = serve_and_stop(env, limit)
    check("left to the kernel" not in err, "a table of %d devices is freed: %s" % (limit, err[-500:]))
    err = serve_and_stop(env, limit + 1)
    check("stopping: %d devices left to the kernel to free" % (limit + 1) in err,
          "a table of %d devices is left to the kernel: %s" % (limit + 1, err[-500:]))


CASES = [
    ("check: devices and accounts from files and directories", t_check_registry_files),
    ("check: problems name their own file, duplicates both places", t_check_errors_name_their_file),
    ("check: a plaintext secret is refused and never echoed", t_check_refuses_plaintext),
    ("check: an unknown owner, with did-you-mean", t_check_unknown_owner),
    ("hash-secret: prints a yescrypt hash crypt(3) verifies", t_hash_secret_verifies),
    ("hash-secret: empty, too long and NUL secrets refused", t_hash_secret_refuses),
    ("hash-secret: no echo on a terminal", t_hash_secret_tty_no_echo),
    ("serve: devices from a registry directory (and an IDN) route and resolve",
     t_serve_devices_from_files),
    ("serve: stopping frees up to 100,000 devices, leaves more to the kernel",
     t_serve_stop_leaves_big_table),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
