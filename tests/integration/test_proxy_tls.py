#!/usr/bin/python3
"""ddport's TLS listener, end to end: curl and openssl s_client -> ddport
serve (routing by SNI, never decrypting) -> openssl s_server playing the
device with its own certificate. Loopback only."""

import os
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

OPENSSL = "/usr/bin/openssl"
DATA = os.path.join(ddtest.SOURCE, "tests", "data")
PAGE = b"<h1>hello over TLS from the device</h1>\n"

# Fatal alerts as the proxy sends them: record type 21, TLS 1.2 record
# version, length 2, level fatal (2), description.
ALERT_DECODE_ERROR = bytes([21, 3, 3, 0, 2, 2, 50])

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{http_port}}}
  - {{name: https, protocol: tls, address: 127.0.0.1:{tls_port}}}
proxy:
  timeouts: {{peek: 3s, connect: 3s, idle: 1m}}
  allow_targets: [127.0.0.0/8]
  access_log: stderr
devices:
  tls.ddport.test: {{address: 127.0.0.1, ports: {{https: {device_port}}}}}
  cam.example.net: {{address: 127.0.0.1, ports: {{https: {device_port}}}}}
  off.ddport.test: {{address: 127.0.0.1, ports: {{https: {dead_port}}}}}
  plain.ddport.test: {{address: 127.0.0.1, ports: {{http: {dead_port}}}}}
"""


class Env:
    pass


def make_certificate(directory):
    key = os.path.join(directory, "device.key")
    cert = os.path.join(directory, "device.pem")
    proc = ddtest.run([OPENSSL, "req", "-x509", "-newkey", "ec",
                       "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                       "-keyout", key, "-out", cert, "-days", "2",
                       "-subj", "/CN=tls.ddport.test",
                       "-addext", "subjectAltName=DNS:tls.ddport.test,DNS:cam.example.net"])
    check(proc.returncode == 0, "openssl req failed: %s" % proc.stderr)
    return cert, key


def start_device(env):
    """openssl s_server -WWW serves files from its working directory over
    TLS, the device's own certificate: the proxy must not touch the bytes."""
    with open(os.path.join(env.dir, "page.html"), "wb") as f:
        f.write(PAGE)
    env.device_port = ddtest.free_port(udp_too=False)
    env.device_log = open(os.path.join(env.dir, "s_server.log"), "wb")
    env.device = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", "127.0.0.1:%d" % env.device_port,
         "-cert", env.cert, "-key", env.key, "-WWW", "-quiet"],
        cwd=env.dir, stdin=subprocess.DEVNULL, stdout=env.device_log,
        stderr=subprocess.STDOUT)
    ddtest._live.append(env.device)
    for _ in range(100):
        if ddtest.tcp_answers(env.device_port):
            return
        time.sleep(0.05)
    raise RuntimeError("openssl s_server did not start")


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.device = None
    env.ddport = None
    try:
        env.cert, env.key = make_certificate(env.dir)
        start_device(env)
        env.http_port = ddtest.free_port(udp_too=False)
        env.tls_port = ddtest.free_port(udp_too=False)
        env.dead_port = ddtest.free_port(udp_too=False)
        config = ddtest.write_file(env.dir, "ddport.yaml", CONFIG.format(
            http_port=env.http_port, tls_port=env.tls_port,
            device_port=env.device_port, dead_port=env.dead_port))
        env.ddport = ddtest.Ddport(config, env.dir,
                                   tcp_ports=[env.http_port, env.tls_port])
        env.ddport.start()
    except Exception:
        teardown(env)
        raise
    return env


def teardown(env):
    try:
        if env.ddport is not None and env.ddport.running():
            rc = env.ddport.stop()
            check_eq(rc, 0, "ddport exit status after SIGTERM")
    finally:
        if env.device is not None:
            ddtest.stop_process(env.device)
            env.device_log.close()
        env.tmp.cleanup()


def s_client(env, servername, extra=()):
    """Runs openssl s_client through the proxy; returns (rc, output)."""
    args = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % env.tls_port,
            "-CAfile", env.cert, "-verify_return_error"] + list(extra)
    if servername is None:
        args.append("-noservername")
    else:
        args += ["-servername", servername]
    proc = subprocess.run(args, input="", capture_output=True, text=True,
                          errors="replace", timeout=20)
    return proc.returncode, proc.stdout + proc.stderr


def test_curl_through_tls(env):
    r = ddtest.curl(env.dir, "https://tls.ddport.test:%d/page.html" % env.tls_port,
                    ["--resolve", "tls.ddport.test:%d:127.0.0.1" % env.tls_port,
                     "--cacert", env.cert])
    check_eq(r.rc, 0, "curl exit status (%s)" % r.stderr.strip())
    check_eq(r.body, PAGE, "page served by the device over TLS")


def test_certificate_is_the_devices(env):
    # The visitor verifies the device's own certificate: end-to-end TLS.
    rc, out = s_client(env, "tls.ddport.test")
    check_eq(rc, 0, "s_client exit status:\n" + out[-800:])
    check("Verify return code: 0 (ok)" in out, "certificate not verified:\n" + out[-800:])
    check("CN = tls.ddport.test" in out, "not the device's certificate")


def test_sni_case_and_trailing_dot(env):
    rc, out = s_client(env, "TLS.DDport.Test.", ["-verify_hostname", "tls.ddport.test"])
    check_eq(rc, 0, "s_client exit status with SNI TLS.DDport.Test.:\n" + out[-600:])


def test_unknown_name_alert(env):
    rc, out = s_client(env, "nobody.ddport.test")
    check(rc != 0, "handshake with an unknown name succeeded")
    check("unrecognized name" in out, "no unrecognized_name alert:\n" + out[-600:])


def test_no_sni_alert(env):
    rc, out = s_client(env, None)
    check(rc != 0, "handshake without SNI succeeded")
    check("unrecognized name" in out, "no unrecognized_name alert:\n" + out[-600:])


def test_offline_device_alert(env):
    rc, out = s_client(env, "off.ddport.test")
    check(rc != 0, "handshake with an offline device succeeded")
    check("internal error" in out, "no internal_error alert:\n" + out[-600:])


def test_device_without_tls_port(env):
    # plain.ddport.test has only an http port: unknown on this listener.
    rc, out = s_client(env, "plain.ddport.test")
    check(rc != 0 and "unrecognized name" in out,
          "expected unrecognized_name:\n" + out[-600:])


def raw_exchange(env, chunks, want=1, timeout=10):
    """Sends chunks (with a small pause between them) and returns the first
    bytes the proxy sends back (at least want, or what came before EOF)."""
    with socket.create_connection(("127.0.0.1", env.tls_port), timeout=timeout) as s:
        for chunk in chunks:
            s.sendall(chunk)
            if len(chunks) > 1:
                time.sleep(0.002)
        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            data = s.recv(4096)
            if not data:
                break
            got += data
        return got


def captured_hello():
    with open(os.path.join(DATA, "clienthello_openssl.bin"), "rb") as f:
        return f.read()  # names Cam.Example.NET


def test_hello_in_one_byte_segments(env):
    hello = captured_hello()
    got = raw_exchange(env, [hello[i:i + 1] for i in range(len(hello))], want=5)
    check(got[:2] == b"\x16\x03", "expected the device's ServerHello record, got %r" % got[:16])


def test_hello_across_records(env):
    # Re-record the handshake into 100-byte TLS records: the server_name
    # then sits in a later record than the first.
    hello = captured_hello()
    handshake = hello[5:5 + int.from_bytes(hello[3:5], "big")]
    records = b""
    for at in range(0, len(handshake), 100):
        part = handshake[at:at + 100]
        records += bytes([22, 3, 1]) + len(part).to_bytes(2, "big") + part
    got = raw_exchange(env, [records], want=5)
    check(got[:2] == b"\x16\x03", "expected the device's ServerHello record, got %r" % got[:16])


def test_not_tls_gets_decode_error(env):
    got = raw_exchange(env, [b"GET / HTTP/1.1\r\nHost: tls.ddport.test\r\n\r\n"], want=7)
    check_eq(got, ALERT_DECODE_ERROR, "reply to plain HTTP on the TLS listener")


def test_http_listener_still_works(env):
    # The same process serves HTTP on its other listener: a device with no
    # http port answers 404 there, not a TLS alert.
    r = ddtest.curl(env.dir, "http://127.0.0.1:%d/" % env.http_port,
                    ["-H", "Host: tls.ddport.test"])
    check_eq(r.status, 404, "HTTP status for a device without an http port")


CASES = [
    ("curl through the TLS listener gets the device's page", test_curl_through_tls),
    ("the visitor verifies the device's own certificate", test_certificate_is_the_devices),
    ("SNI is matched case-insensitively, trailing dot stripped", test_sni_case_and_trailing_dot),
    ("unknown SNI gets unrecognized_name", test_unknown_name_alert),
    ("ClientHello without SNI gets unrecognized_name", test_no_sni_alert),
    ("offline device gets internal_error", test_offline_device_alert),
    ("device without a port on this listener is unknown", test_device_without_tls_port),
    ("ClientHello in 1-byte TCP segments routes", test_hello_in_one_byte_segments),
    ("ClientHello across 100-byte TLS records routes", test_hello_across_records),
    ("plain HTTP on the TLS listener gets decode_error", test_not_tls_gets_decode_error),
    ("HTTP listener beside TLS answers 404 for a TLS-only device", test_http_listener_still_works),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
