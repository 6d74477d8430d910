#!/usr/bin/python3
"""`ddport check -c FILE`: valid files pass with a one-line summary; broken
files fail with exit status 1 and one FILE:LINE:COLUMN: message line per
problem on stderr, at the position of the offending key or value."""

import os
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

# `check` binds nothing, so fixed port numbers are fine here.
BASE = ddtest.config_text(proxy_port=18080, dns_port=15353, backend_port=10080, dead_port=10081)


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


def variant(old, new, text=BASE):
    check(text.count(old) == 1, "test bug: %r occurs %d times in the base config" % (old, text.count(old)))
    return text.replace(old, new)


def run_check(path):
    return ddtest.run([ddtest.DDPORT, "check", "-c", path], timeout=30)


def check_broken(env, name, text, expected, exact=True):
    """Writes text to a file, runs check, and verifies exit status 1 and a
    diagnostic at each (line, col) in expected; with exact, no others."""
    path = ddtest.write_file(env.dir, name, text)
    proc = run_check(path)
    err = ddtest._one_line(proc.stderr)[:600]
    check_eq(proc.returncode, 1, "exit status (stderr: %s)" % err)
    diags = ddtest.diagnostics(proc.stderr, path)
    check(diags, "no '%s:LINE:COLUMN: message' line on stderr; stderr: %s" % (path, err))
    got = sorted((d[0], d[1]) for d in diags)
    for pos in expected:
        check(pos in got, "no diagnostic at line %d column %d; got %s (stderr: %s)"
              % (pos[0], pos[1], got, err))
    if exact:
        check_eq(got, sorted(expected), "diagnostic positions (stderr: %s)" % err)
    return proc, diags


def message_at(diags, pos):
    return " ".join(d[2] for d in diags if (d[0], d[1]) == pos)


def t_example(env):
    path = os.path.join(ddtest.SOURCE, "config.example.yaml")
    check(os.path.isfile(path), "missing %s" % path)
    proc = run_check(path)
    check_eq(proc.returncode, 0, "exit status (stderr: %s)" % ddtest._one_line(proc.stderr)[:400])
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    check_eq(len(lines), 1, "summary lines on stdout (%r)" % proc.stdout[:300])


def t_base(env):
    path = ddtest.write_file(env.dir, "valid.yaml", BASE)
    proc = run_check(path)
    check_eq(proc.returncode, 0, "exit status (stderr: %s)" % ddtest._one_line(proc.stderr)[:400])
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    check_eq(len(lines), 1, "summary lines on stdout (%r)" % proc.stdout[:300])


def t_unknown_key(env):
    text = variant("\nlisteners:\n", "\nlistners:\n")
    pos = ddtest.position_of(text, "listners:")
    # Misspelling the key may also leave the file without listeners: allow
    # that as a further diagnostic, but the misspelt key must be reported.
    _, diags = check_broken(env, "unknown-key.yaml", text, [pos], exact=False)
    msg = message_at(diags, pos)
    check("did you mean" in msg.lower(), "message %r has no 'did you mean'" % msg)
    check("listeners" in msg, "message %r does not suggest 'listeners'" % msg)


def t_wrong_type(env):
    text = variant("workers: 1\n", "workers: lots\n")
    check_broken(env, "wrong-type.yaml", text, [ddtest.position_of(text, "lots")])


def t_bad_address(env):
    text = variant("address: 127.0.0.1:18080", "address: 999.1.1.1:18080")
    check_broken(env, "bad-address.yaml", text, [ddtest.position_of(text, "999.1.1.1:18080")])


def t_port_range(env):
    text = variant("demo.ddport.test: {address: 127.0.0.1, ports: {http: 10080}}",
                   "demo.ddport.test: {address: 127.0.0.1, ports: {http: 70000}}")
    check_broken(env, "port-range.yaml", text, [ddtest.position_of(text, "70000")])


def t_duplicate_device_case(env):
    line = "  demo.ddport.test: {address: 127.0.0.1, ports: {http: 10080}}\n"
    text = variant(line, "  Demo.ddport.test: {address: 127.0.0.1, ports: {http: 10081}}\n" + line)
    # the later entry is the duplicate
    check_broken(env, "duplicate-device.yaml", text, [ddtest.position_of(text, "demo.ddport.test:")])


def t_duplicate_device_same(env):
    line = "  demo.ddport.test: {address: 127.0.0.1, ports: {http: 10080}}\n"
    text = variant(line, line + line)
    check_broken(env, "duplicate-device-same.yaml", text,
                 [ddtest.position_of(text, "demo.ddport.test:", occurrence=2)])


def t_three_problems(env):
    text = variant("workers: 1\n", "workers: lots\n")
    text = variant("address: 127.0.0.1:18080", "address: 999.1.1.1:18080", text)
    text = variant("ports: {http: 10080}}\n  \"*.wild", "ports: {http: 70000}}\n  \"*.wild", text)
    expected = [ddtest.position_of(text, "lots"), ddtest.position_of(text, "999.1.1.1:18080"),
                ddtest.position_of(text, "70000")]
    proc, _ = check_broken(env, "three.yaml", text, expected)
    path = os.path.join(env.dir, "three.yaml")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    for line in lines:
        check(line.startswith(path + ":"), "stderr line does not start with the file path: %r" % line)


def t_lines_start_with_path(env):
    text = variant("workers: 1\n", "workers: lots\n")
    path = ddtest.write_file(env.dir, "prefix.yaml", text)
    proc = run_check(path)
    check_eq(proc.returncode, 1, "exit status")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    check(lines, "nothing on stderr")
    for line in lines:
        check(line.startswith(path + ":"), "stderr line does not start with the file path: %r" % line)
        check(ddtest.DIAG_RE.match(line), "not FILE:LINE:COLUMN: message: %r" % line)


def t_update_tls_files(env):
    """check reads the update endpoint's certificate and key as serve
    would: a missing or mismatched one fails check, not only serve."""
    tls = ("update:\n  listen: [127.0.0.1:18081]\n"
           "  tls: {cert: u.crt, key: %s, listen: [127.0.0.1:18443]}\n")
    path = ddtest.write_file(env.dir, "tls-missing.yaml", BASE + tls % "u.key")
    proc = run_check(path)
    check_eq(proc.returncode, 1, "exit status with no certificate file (stdout: %s)" % proc.stdout)
    check("%s: update.tls: cannot load the certificate %s" % (path, os.path.join(env.dir, "u.crt"))
          in proc.stderr, "the missing certificate named; stderr: %r" % proc.stderr[:400])
    ddtest.make_cert(env.dir, "u", "u.ddport.test")
    ddtest.make_cert(env.dir, "other", "other.ddport.test")
    proc = run_check(path)
    check_eq(proc.returncode, 0, "exit status with a good pair (stderr: %s)" % proc.stderr[:300])
    path = ddtest.write_file(env.dir, "tls-mismatch.yaml", BASE + tls % "other.key")
    proc = run_check(path)
    check_eq(proc.returncode, 1, "exit status with another certificate's key")
    check("cannot load the key (or it does not match the certificate) %s"
          % os.path.join(env.dir, "other.key") in proc.stderr,
          "the mismatched key named; stderr: %r" % proc.stderr[:400])


def t_production_example(env):
    """docs/examples/production.yaml is valid YAML for ddport: check finds
    nothing wrong but the certificate it names, which is the operator's."""
    path = os.path.join(ddtest.SOURCE, "docs", "examples", "production.yaml")
    proc = run_check(path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    check_eq(proc.returncode, 1, "exit status (stdout: %s)" % proc.stdout)
    check_eq(len(lines), 1, "one problem only; stderr: %r" % proc.stderr[:600])
    check(lines[0].startswith("%s: update.tls: cannot load the certificate /etc/ddport/" % path),
          "the missing certificate is the problem: %r" % lines[0])


def t_missing_file(env):
    path = os.path.join(env.dir, "no-such-dir", "missing.yaml")
    proc = run_check(path)
    check_eq(proc.returncode, 1, "exit status (stderr: %s)" % ddtest._one_line(proc.stderr)[:300])
    check(path in proc.stderr, "stderr does not name %s: %r" % (path, proc.stderr[:300]))


def registry_config(env, registry_text):
    """The base config with one registry file holding registry_text."""
    reg = ddtest.write_file(env.dir, "devices.yaml", registry_text)
    return ddtest.write_file(env.dir, "with-registry.yaml",
                             BASE + "registry: [%s]\n" % reg), reg


def t_registry_file_many_reads(env):
    """A registry file of several MiB is read in pieces (1 MiB a read);
    every device in it counts, the last one included."""
    n = 60000  # about 4 MiB: a few reads
    lines = ["devices:\n"] + [
        "  dev%d.ddport.test: {address: 127.0.0.1, ports: {http: 10080}}  # %s\n"
        % (i, "x" * 10) for i in range(n)]
    text = "".join(lines)
    check(len(text) > 3 * 2**20, "test bug: %d bytes only" % len(text))
    path, _ = registry_config(env, text)
    proc = run_check(path)
    check_eq(proc.returncode, 0, "exit status (stderr: %s)" % ddtest._one_line(proc.stderr)[:300])
    check("%d devices" % (n + 3) in proc.stdout, "device count in %r" % proc.stdout)
    # A broken last line is found at its own line: the reads joined up.
    path, reg = registry_config(env, text + "  last.ddport.test: {address: 999.1.1.1}\n")
    proc = run_check(path)
    check_eq(proc.returncode, 1, "exit status")
    check("%s:%d:" % (reg, n + 2) in proc.stderr,
          "the bad address reported on line %d: %r" % (n + 2, proc.stderr[:300]))


def t_registry_file_too_large(env):
    """A registry file over 64 MiB is refused with a clear message, not
    read (limit: MAX_FILE_SIZE in registry/config.c)."""
    path, reg = registry_config(env, "devices:\n")
    with open(reg, "a") as f:
        f.write(("#" + "x" * 1023 + "\n") * (64 * 1024 + 1))
    proc = run_check(path)
    check_eq(proc.returncode, 1, "exit status (stderr: %s)" % ddtest._one_line(proc.stderr)[:300])
    check("larger than 64 MiB; split it into several files" in proc.stderr,
          "the limit named: %r" % proc.stderr[:300])


CASES = [
    ("config.example.yaml passes with a one-line summary", t_example),
    ("the test base config passes", t_base),
    ("unknown key 'listners' with did-you-mean", t_unknown_key),
    ("wrong type 'workers: lots'", t_wrong_type),
    ("bad listener address 999.1.1.1", t_bad_address),
    ("port out of range 70000", t_port_range),
    ("duplicate device differing in case", t_duplicate_device_case),
    ("duplicate device, same spelling", t_duplicate_device_same),
    ("three problems give three lines", t_three_problems),
    ("every stderr line starts with the file path", t_lines_start_with_path),
    ("missing file: exit 1 naming the file", t_missing_file),
    ("a registry file of several MiB is read whole", t_registry_file_many_reads),
    ("a registry file over 64 MiB is refused", t_registry_file_too_large),
    ("update.tls certificate and key are loaded by check", t_update_tls_files),
    ("docs/examples/production.yaml: only its certificate is missing", t_production_example),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
