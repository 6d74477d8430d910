"""Shared helpers for ddport's integration tests.

Everything here runs on loopback only and uses the Python standard library.
Each test script builds a list of (name, function) cases and hands it to
run_cases(), which prints one `ok - name` / `not ok - name: reason` /
`skip - name: reason` line per case and exits 0 only when none failed.

Environment:
  DDPORT         path to the ddport binary (default: $DDPORT_SOURCE/build/ddport)
  DDPORT_SOURCE  repository root (default: two levels above this file)

Every process started here is stopped by its PID (terminate, then kill) in
finally blocks and, as a last resort, by an atexit hook.
"""

import atexit
import ctypes
import hashlib
import http.server
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("DDPORT_SOURCE") or os.path.normpath(os.path.join(HERE, "..", ".."))
DDPORT = os.environ.get("DDPORT") or os.path.join(SOURCE, "build", "ddport")

CURL = "/usr/bin/curl"
DIG = "/usr/bin/dig"
IP = shutil.which("ip") or "/usr/sbin/ip"

LOOPBACK4 = "127.0.0.1"

# --------------------------------------------------------------------------
# the tiny test runner


class Skip(Exception):
    """Raise inside a case to report it as skipped."""


class Failure(AssertionError):
    pass


def check(cond, reason):
    if not cond:
        raise Failure(reason)


def check_eq(got, expected, what):
    if got != expected:
        raise Failure("%s: expected %s, got %s" % (what, _short(expected), _short(got)))


def _short(value, limit=300):
    text = repr(value)
    if len(text) > limit:
        text = text[:limit] + "...(%d chars)" % len(text)
    return text


def _one_line(text):
    return " | ".join(line for line in str(text).splitlines() if line.strip())


def _sigterm_to_exit(signum, frame):
    # Turn SIGTERM (e.g. meson's timeout) into SystemExit so that finally
    # blocks and atexit hooks stop the processes we started.
    raise SystemExit(128 + signum)


def started(env, teardown, start):
    """What start() returns; if it raises, teardown(env) runs first, since
    run_cases tears down only an env that setup returned."""
    try:
        return start()
    except Exception:
        teardown(env)
        raise


def stop_checked(ddport):
    """Stops ddport if it still runs; it must exit 0 on SIGTERM."""
    if ddport.running():
        check_eq(ddport.stop(), 0, "ddport exit status after SIGTERM")


def run_cases(cases, setup=None, teardown=None, verbose_env="DDTEST_VERBOSE"):
    """Runs cases [(name, fn)] in order; fn takes the object setup() returned
    (or no argument when setup is None). Prints one line per case and exits
    the process: 0 when no case failed, 1 otherwise."""
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    verbose = bool(os.environ.get(verbose_env))
    failed = 0
    ctx = None
    setup_error = None
    try:
        if setup is not None:
            try:
                ctx = setup()
            except Exception as exc:  # reported on every case below
                setup_error = "setup failed: %s" % _one_line(exc)
                if verbose:
                    traceback.print_exc()
        for name, fn in cases:
            if setup_error is not None:
                print("not ok - %s: %s" % (name, setup_error), flush=True)
                failed += 1
                continue
            try:
                if setup is None:
                    fn()
                else:
                    fn(ctx)
            except Skip as exc:
                print("skip - %s: %s" % (name, _one_line(exc)), flush=True)
            except Exception as exc:
                failed += 1
                kind = "" if isinstance(exc, AssertionError) else type(exc).__name__ + ": "
                print("not ok - %s: %s%s" % (name, kind, _one_line(exc)), flush=True)
                if verbose:
                    traceback.print_exc()
            else:
                print("ok - %s" % name, flush=True)
    finally:
        if teardown is not None and ctx is not None:
            try:
                teardown(ctx)
            except Exception as exc:
                failed += 1
                print("not ok - teardown: %s" % _one_line(exc), flush=True)
        stop_all_processes()
    sys.exit(1 if failed else 0)


# --------------------------------------------------------------------------
# ports

_taken_ports = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(udp_too=True, attempts=64):
    """A port on 127.0.0.1 that is free for TCP (and UDP when udp_too) right
    now: tries random high ports, binds them, closes them."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        # Below the kernel's ephemeral range (32768-60999 by default), so no
        # outgoing connection on the machine can take it before we bind.
        low, high = _ephemeral_range()
        port = rng.randint(10000, low - 1) if low > 11000 else rng.randint(high + 1, 65000)
        if port in _taken_ports:
            continue
        socks = []
        try:
            kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp_too else [])
            for kind in kinds:
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind((LOOPBACK4, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _taken_ports.add(port)
        return port
    raise RuntimeError("no free port found in %d attempts" % attempts)


# --------------------------------------------------------------------------
# configuration

CONFIG_TEMPLATE = """\
# written by tests/integration/ddtest.py
workers: 1
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{proxy_port}}}
proxy:
  timeouts: {{peek: 5s, connect: 5s, idle: 5m}}
  allow_targets: [127.0.0.0/8, "::1/128"]
  access_log: stderr
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - name: ddport.test
      proxy: [127.0.0.1, "::1"]
      ttl: 60
      nameservers: [ns1.ddport.test]
      glue: {{ns1.ddport.test: [127.0.0.1]}}
      soa: {{email: hostmaster@ddport.test, refresh: 1h, retry: 10m, expire: 7d, minimum: 60}}
devices:
  demo.ddport.test: {{address: 127.0.0.1, ports: {{http: {backend_port}}}}}
  "*.wild.ddport.test": {{address: 127.0.0.1, ports: {{http: {backend_port}}}}}
  off.ddport.test: {{address: 127.0.0.1, ports: {{http: {dead_port}}}}}
{extra_devices}"""

# What the zone above says, for the DNS tests to compare against.
ZONE = "ddport.test"
ZONE_TTL = 60
ZONE_PROXY_V4 = "127.0.0.1"
ZONE_PROXY_V6 = "::1"
ZONE_NS = "ns1.ddport.test"
ZONE_NS_GLUE = "127.0.0.1"
ZONE_SOA_RNAME = "hostmaster.ddport.test"  # email hostmaster@ddport.test
ZONE_SOA_TIMERS = (3600, 600, 7 * 86400, 60)  # refresh, retry, expire, minimum


def config_text(proxy_port, dns_port, backend_port, dead_port, extra_devices=""):
    """The test configuration; extra_devices are more lines under devices:
    (each indented two spaces and ending in a newline)."""
    return CONFIG_TEMPLATE.format(proxy_port=proxy_port, dns_port=dns_port,
                                  backend_port=backend_port, dead_port=dead_port,
                                  extra_devices=extra_devices)


def write_file(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def make_cert(directory, name, cn):
    """A self-signed P-256 certificate for cn: DIRECTORY/NAME.crt and .key."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=" + cn, "-keyout", os.path.join(directory, name + ".key"),
                    "-out", os.path.join(directory, name + ".crt")],
                   check=True, capture_output=True, timeout=30)


def start_proxy_dns(directory, name, text, proxy_port, dns_port):
    """Writes text to DIRECTORY/NAME.yaml and starts ddport on it, ready once
    the proxy and DNS (UDP and TCP) ports answer."""
    path = write_file(directory, name + ".yaml", text)
    return Ddport(path, directory, tcp_ports=[proxy_port, dns_port], udp_ports=[dns_port],
                  name=name).start()


def start_on_free_ports(env, name, text_for):
    """Picks free proxy and DNS ports (kept in env.proxy_port and
    env.dns_port, and on the ddport returned), then start_proxy_dns in
    env.dir with the config text_for() writes for them."""
    env.proxy_port = free_port()
    env.dns_port = free_port()
    d = start_proxy_dns(env.dir, name, text_for(), env.proxy_port, env.dns_port)
    d.proxy_port, d.dns_port = env.proxy_port, env.dns_port
    return d


def write_config(directory, proxy_port, dns_port, backend_port, dead_port, extra_devices="",
                 name="ddport.yaml"):
    return write_file(directory, name, config_text(proxy_port, dns_port, backend_port, dead_port,
                                                   extra_devices))


# --------------------------------------------------------------------------
# processes

_live = []  # Popen objects we started and have not reaped


def _reap(proc):
    if proc in _live:
        _live.remove(proc)


def stop_process(proc, sig=signal.SIGTERM, timeout=15):
    """Sends sig to proc (by PID, through Popen) and waits up to timeout
    seconds; kills it if it is still running. Returns its exit status, or
    None when it had to be killed."""
    if proc.poll() is not None:
        _reap(proc)
        return proc.returncode
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _reap(proc)
        return None
    _reap(proc)
    return rc


def stop_all_processes():
    for proc in list(_live):
        try:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        except Exception:
            pass
        _reap(proc)


atexit.register(stop_all_processes)


def run(args, timeout=30, input=None):
    """subprocess.run with a bound, capturing text output."""
    return subprocess.run(args, input=input, capture_output=True, timeout=timeout,
                          text=True, errors="replace")


def hash_secret(secret):
    """The crypt(3) hash `ddport hash-secret` prints for secret, for an
    account in a test's configuration."""
    proc = run([DDPORT, "hash-secret"], input=secret)
    check_eq(proc.returncode, 0, "hash-secret exit status (stderr %r)" % proc.stderr)
    value = proc.stdout.strip()
    check(value.startswith("$") and "\n" not in value, "hash-secret printed %r" % proc.stdout)
    return value


def dns_probe_query(name="ddport.test", qtype=6, qid=None):
    """A minimal DNS query message (no EDNS, RD clear)."""
    if qid is None:
        qid = random.randint(0, 0xFFFF)
    header = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label.encode("ascii")
                     for label in name.split(".") if label) + b"\0"
    return qid, header + qname + struct.pack("!HH", qtype, 1)


def tcp_answers(port, host=LOOPBACK4, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def udp_dns_answers(port, host=LOOPBACK4, timeout=0.3):
    qid, msg = dns_probe_query()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(msg)
        for _ in range(4):
            data = s.recv(4096)
            if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                return True
        return False
    except OSError:  # timeout, or ICMP port unreachable
        return False
    finally:
        s.close()


CLONE_NEWNET = 0x40000000


def enter_private_network(addresses=()):
    """Moves this process into a new network namespace (unshare(2) with
    CLONE_NEWNET, through ctypes: Debian 12's Python has no os.unshare)
    with only a loopback interface, carrying 127.0.0.0/8 and addresses
    ("A.B.C.D/N" each). Call it before any thread or child exists: they
    are then born there, and what they do on the network stays there. The
    namespace goes with the last process in it. Returns None, or why it
    could not be made (no ip(8), no CAP_SYS_ADMIN)."""
    if not os.path.exists(IP):
        return "no ip(8) at %s" % IP
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return "unshare(CLONE_NEWNET): %s" % os.strerror(ctypes.get_errno())
    steps = [["link", "set", "lo", "up"]]
    steps += [["addr", "add", addr, "dev", "lo"] for addr in addresses]
    for args in steps:
        proc = run([IP] + args, timeout=20)
        if proc.returncode != 0:
            # The process is in the new namespace already: without loopback
            # nothing at all would work, so this is a hard error.
            raise RuntimeError("ip %s: %s" % (" ".join(args), proc.stderr.strip()))
    links = run([IP, "-o", "link", "show"], timeout=20).stdout.splitlines()
    if len(links) != 1 or ": lo:" not in links[0]:
        raise RuntimeError("the new namespace has other interfaces than lo: %s" % links)
    return None


def force_splice(config_path):
    """With DDTEST_SPLICE=on|off|auto in the environment, sets proxy.splice
    in the configuration file, so one suite checks both ways of relaying."""
    mode = os.environ.get("DDTEST_SPLICE")
    if not mode:
        return
    with open(config_path, encoding="utf-8") as f:
        text = f.read()
    if re.search(r"^  splice:", text, re.M):
        return
    line = "  splice: %s\n" % mode
    text, n = re.subn(r"^proxy:[ \t]*\n", lambda m: m.group(0) + line, text,
                      count=1, flags=re.M)
    if n == 0:
        text += "\nproxy:\n" + line
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(text)


class Ddport:
    """A `ddport serve -c CONFIG` process with its stderr in a file."""

    def __init__(self, config_path, workdir, tcp_ports=(), udp_ports=(), name="ddport"):
        self.config_path = config_path
        self.tcp_ports = list(tcp_ports)
        self.udp_ports = list(udp_ports)
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        self.proc = None
        self.preexec = None  # e.g. to lower RLIMIT_NOFILE in the child
        self.extra_args = []  # e.g. ["-v"] for debug lines in the log
        self.wrapper = []  # a command that ends by exec'ing ddport (same PID)

    def start(self, ready_timeout=15):
        force_splice(self.config_path)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.wrapper + [DDPORT, "serve", "-c", self.config_path]
                                         + self.extra_args,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=os.path.dirname(self.config_path),
                                         preexec_fn=self.preexec)
        _live.append(self.proc)
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        pending_tcp = list(self.tcp_ports)
        pending_udp = list(self.udp_ports)
        for _ in range(int(timeout / 0.05) + 1):
            if self.proc.poll() is not None:
                raise RuntimeError("ddport serve exited with status %s before it was ready; stderr: %s"
                                   % (self.proc.returncode, self.stderr_tail()))
            pending_tcp = [p for p in pending_tcp if not tcp_answers(p)]
            pending_udp = [p for p in pending_udp if not udp_dns_answers(p)]
            # Workers accept before the control loop has armed its file
            # watches and the update endpoint; "serving" comes after both.
            if not pending_tcp and not pending_udp and " serving: " in self.stderr_text():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise RuntimeError("ddport not ready after %ss (TCP ports not accepting: %s, UDP DNS ports "
                           "not answering: %s, or no 'serving' line); stderr: %s"
                           % (timeout, pending_tcp, pending_udp, self.stderr_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signals ddport and returns its exit status (None if it had to be killed)."""
        if self.proc is None:
            return None
        return stop_process(self.proc, sig, timeout)

    def reload(self, timeout=10):
        """SIGHUP, then waits (bounded) until the log says the reload was applied."""
        before = self.stderr_text().count(" devices in force ")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr_text().count(" devices in force ") > before:
                return
            time.sleep(0.05)
        raise Failure("reload not applied within %d s: %s" % (timeout, self.stderr_tail()))

    def check_restart_needed(self, old, new, key, timeout=10):
        """Replaces old with new in the config, reloads and checks that the
        log names key as needing a restart; the config is put back after."""
        with open(self.config_path, encoding="utf-8") as f:
            text = f.read()
        check(old in text, "%r is not in the config" % old)
        try:
            with open(self.config_path, "w", encoding="utf-8") as f:
                f.write(text.replace(old, new))
            self.reload(timeout)
            want = "needs a restart: " + key
            deadline = time.monotonic() + timeout
            while want not in self.stderr_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            check(want in self.stderr_text(),
                  "reload did not say %s needs a restart: %s" % (key, self.stderr_tail()))
        finally:
            with open(self.config_path, "w", encoding="utf-8") as f:
                f.write(text)

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, lines=8):
        return _one_line("\n".join(self.stderr_text().splitlines()[-lines:])) or "(empty)"


# --------------------------------------------------------------------------
# the backend ("device") HTTP server

BIG_SIZE = 10 * 1024 * 1024
BIG_SEED = 20240601
_big_cache = []


def big_body():
    """The deterministic 10 MiB body served on /big."""
    if not _big_cache:
        _big_cache.append(random.Random(BIG_SEED).randbytes(BIG_SIZE))
    return _big_cache[0]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


BACKEND_HEADER = "X-Ddtest-Backend"


class _Recorder:
    """Wraps the handler's rfile and keeps a copy of every byte read, so the
    backend can echo the request head exactly as it arrived."""

    def __init__(self, inner):
        self._inner = inner
        self.buf = bytearray()

    def readline(self, size=-1):
        line = self._inner.readline(size)
        if len(self.buf) < 1 << 20:
            self.buf += line
        return line

    def read(self, size=-1):
        return self._inner.read(size)

    def __getattr__(self, name):
        return getattr(self._inner, name)


MAX_POST = 64 * 1024 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ddtest-backend/1"
    timeout = 60  # an idle keep-alive connection is dropped after this

    def setup(self):
        super().setup()
        self.rfile = _Recorder(self.rfile)

    def handle_one_request(self):
        self.rfile.buf = bytearray()
        super().handle_one_request()

    def log_message(self, format, *args):
        pass

    def _path(self):
        # origin-form "/x?y" or absolute-form "http://host/x?y"
        return urllib.parse.urlsplit(self.path).path or "/"

    def _reply(self, status, body, ctype="application/octet-stream", chunk=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header(BACKEND_HEADER, self.server.token)
        self.end_headers()
        if self.command == "HEAD":
            return
        if chunk is None:
            self.wfile.write(body)
        else:
            view = memoryview(body)
            for i in range(0, len(body), chunk):
                self.wfile.write(view[i:i + chunk])

    def do_GET(self):
        head = bytes(self.rfile.buf)
        self.server.record(head)
        path = self._path()
        if path == "/":
            self._reply(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/big":
            self._reply(200, big_body(), chunk=64 * 1024)
        elif path == "/echo":
            self._reply(200, head)
        else:
            self._reply(404, b"backend: no such path\n", "text/plain")

    do_HEAD = do_GET

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            for _ in range(1 << 20):
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):  # trailers
                        if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                            break
                    return bytes(out)
                if len(out) + size > MAX_POST:
                    raise ValueError("body too large")
                out += self.rfile.read(size)
                self.rfile.readline(8)
            raise ValueError("too many chunks")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_POST:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def do_POST(self):
        head = bytes(self.rfile.buf)
        self.server.record(head)
        body = self._read_body()
        self._reply(200, body, chunk=64 * 1024)

    do_PUT = do_POST


class Backend:
    """A threaded HTTP/1.1 server on 127.0.0.1 playing the device:
      GET /      a page with a per-run random token
      GET /big   big_body() (10 MiB, deterministic)
      GET /echo  the request line and headers exactly as received
      POST any   echoes the request body
    Every response carries the header X-Ddtest-Backend: <token>."""

    def __init__(self, host=LOOPBACK4, port=0):
        self.token = "%016x" % random.SystemRandom().getrandbits(64)
        self.page = ("<!doctype html>\n<title>ddport test backend</title>\n"
                     "<p>hello from the device, token %s</p>\n" % self.token).encode("ascii")
        self.heads = []
        self._lock = threading.Lock()
        server_class = http.server.ThreadingHTTPServer
        if ":" in host:
            server_class = type("ThreadingHTTPServer6", (server_class,),
                                {"address_family": socket.AF_INET6})
        server = server_class((host, port), _Handler)
        server.daemon_threads = True
        server.token = self.token
        server.page = self.page
        server.record = self._record
        self.server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        self._stopped = False

    def _record(self, head):
        with self._lock:
            self.heads.append(head)

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------
# clients


class CurlResult:
    def __init__(self, rc, stderr, status, headers, body_path):
        self.rc = rc
        self.stderr = stderr
        self.status = status
        self.headers = headers  # [(name, value)] of the final response
        self.body_path = body_path

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def body(self):
        try:
            with open(self.body_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def describe(self):
        return "curl exit %s, HTTP %s, stderr %r" % (self.rc, self.status, self.stderr.strip()[:200])


def _parse_header_dump(raw):
    """Headers of the last response in a `curl -D` dump (skips 1xx blocks)."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip()]
    if not blocks:
        return None, []
    lines = blocks[-1].splitlines()
    m = re.match(r"HTTP/\S+\s+(\d{3})", lines[0])
    status = int(m.group(1)) if m else None
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return status, headers


_curl_count = [0]


def curl(workdir, url, args=(), timeout=60):
    """Runs curl -sS on url with extra args; never uses a proxy from the
    environment. Returns a CurlResult (body kept in a file in workdir)."""
    _curl_count[0] += 1
    n = _curl_count[0]
    body_path = os.path.join(workdir, "curl%d.body" % n)
    head_path = os.path.join(workdir, "curl%d.head" % n)
    cmd = [CURL, "-sS", "--noproxy", "*", "--max-time", str(timeout - 5),
           "-o", body_path, "-D", head_path] + list(args) + [url]
    proc = run(cmd, timeout=timeout)
    try:
        with open(head_path, "r", encoding="latin-1") as f:
            status, headers = _parse_header_dump(f.read())
    except FileNotFoundError:
        status, headers = None, []
    return CurlResult(proc.returncode, proc.stderr, status, headers, body_path)


class RawResponse:
    def __init__(self, status, reason, headers, body, closed):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.closed = closed  # the peer closed the connection after it

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


class RawConn:
    """A plain TCP connection for hand-written HTTP, with bounded reads."""

    def __init__(self, port, host=LOOPBACK4, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.timeout = timeout

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_bytewise(self, data, pause=0.002):
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(pause)

    def _fill(self, deadline):
        if self.eof:
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("no complete response within the deadline")
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data for %ss" % self.timeout)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_response(self, overall=30, max_bytes=64 << 20):
        """Reads one response (Content-Length, chunked, or until EOF)."""
        deadline = time.monotonic() + overall
        for _ in range(100000):
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > 1 << 20:
                raise Failure("response head larger than 1 MiB")
            if not self._fill(deadline):
                raise Failure("connection closed before a complete response head; got %s"
                              % _short(bytes(self.buf)))
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        lines = head.split("\r\n")
        m = re.match(r"HTTP/\d\.\d (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise Failure("bad status line %r" % lines[0])
        status, reason = int(m.group(1)), m.group(2) or ""
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        resp = RawResponse(status, reason, headers, b"", False)
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if 100 <= status < 200:
            return resp
        if "chunked" in te:
            body = bytearray()
            for _ in range(1 << 20):
                while b"\r\n" not in self.buf:
                    if not self._fill(deadline):
                        raise Failure("EOF inside chunked body")
                line, _, rest = bytes(self.buf).partition(b"\r\n")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                while len(rest) < size + 2:
                    if not self._fill(deadline):
                        raise Failure("EOF inside chunk")
                    line, _, rest = bytes(self.buf).partition(b"\r\n")
                body += rest[:size]
                self.buf = bytearray(rest[size + 2:])
                if size == 0:
                    break
            resp.body = bytes(body)
        elif cl is not None:
            n = int(cl)
            while len(self.buf) < n:
                if not self._fill(deadline):
                    raise Failure("EOF after %d of %d body bytes" % (len(self.buf), n))
            resp.body = bytes(self.buf[:n])
            del self.buf[:n]
        else:
            while self._fill(deadline):
                if len(self.buf) > max_bytes:
                    raise Failure("body larger than %d bytes" % max_bytes)
            resp.body = bytes(self.buf)
            self.buf = bytearray()
            resp.closed = True
        return resp

    def wait_closed(self, overall=15):
        """True when the peer closes the connection (after any pending
        bytes) within overall seconds; False when it stays open."""
        deadline = time.monotonic() + overall
        for _ in range(100000):
            try:
                if not self._fill(deadline):
                    return True
            except TimeoutError:
                return False
        return False


def raw_exchange(port, request, bytewise=False):
    """Sends request on a new connection and reads one response."""
    with RawConn(port) as conn:
        if bytewise:
            conn.send_bytewise(request)
        else:
            conn.send(request)
        return conn.read_response()


# --------------------------------------------------------------------------
# dig output


class DigResult:
    def __init__(self, rc, text):
        self.rc = rc
        self.text = text
        self.status = None
        self.flags = set()
        self.question = []  # [(name, class, type)]
        self.answer = []  # [(name, ttl, class, type, rdata-list)]
        self.authority = []
        self.additional = []
        self._parse()

    def _parse(self):
        section = None
        sections = {"QUESTION": self.question, "ANSWER": self.answer,
                    "AUTHORITY": self.authority, "ADDITIONAL": self.additional}
        for line in self.text.splitlines():
            m = re.search(r"status: ([A-Z]+)", line)
            if m and "HEADER" in line:
                self.status = m.group(1)
            m = re.match(r";; [Ff]lags: ([a-z ]*)[;:]", line)
            if m:
                self.flags = set(m.group(1).split())
            m = re.match(r";; ([A-Z]+) SECTION:", line)
            if m:
                section = sections.get(m.group(1))
                continue
            if not line.strip():
                section = None
                continue
            if section is None:
                continue
            if section is self.question:
                parts = line.lstrip("; \t").split()
                if len(parts) >= 3:
                    self.question.append((parts[0], parts[1], parts[2]))
                continue
            if line.startswith(";"):
                continue
            parts = line.split()
            if len(parts) >= 4:
                name, ttl, klass, rtype = parts[:4]
                section.append((name, int(ttl) if ttl.isdigit() else ttl, klass, rtype, parts[4:]))

    def records(self, section, rtype):
        return [r for r in getattr(self, section) if r[3] == rtype]

    def describe(self):
        return "status %s flags %s answer %s authority %s" % (
            self.status, sorted(self.flags), self.answer, self.authority)


def dig(port, name, rtype="A", extra=(), program=DIG, timeout=20):
    if os.path.basename(program) == "kdig":
        bounds = ["+retry=0", "+timeout=2"]  # kdig spells +tries/+time differently
    else:
        bounds = ["+tries=1", "+time=2"]
    cmd = [program, "@127.0.0.1", "-p", str(port)] + bounds + list(extra) + [name, rtype]
    proc = run(cmd, timeout=timeout)
    return DigResult(proc.returncode, proc.stdout)


# --------------------------------------------------------------------------
# ddport check / one-shot commands


DIAG_RE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")


def diagnostics(stderr, path):
    """[(line, col, message)] of the FILE:LINE:COLUMN lines that name path."""
    out = []
    for line in stderr.splitlines():
        if line.startswith(path + ":"):
            m = DIAG_RE.match(line)
            if m and m.group("file") == path:
                out.append((int(m.group("line")), int(m.group("col")), m.group("msg")))
    return out


def position_of(text, needle, occurrence=1):
    """1-based (line, column) of the occurrence-th needle in text."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, col


def require_binary():
    if not (os.path.isfile(DDPORT) and os.access(DDPORT, os.X_OK)):
        raise RuntimeError("ddport binary not found or not executable: %s (set DDPORT)" % DDPORT)


def tempdir(prefix="ddtest-"):
    return tempfile.TemporaryDirectory(prefix=prefix)


def threads(pid):
    """[(tid, name)] of process pid's threads, from /proc; a thread that
    ends meanwhile is left out."""
    out = []
    task_dir = "/proc/%d/task" % pid
    for tid in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, tid, "comm")) as f:
                out.append((int(tid), f.read().strip()))
        except OSError:
            continue
    return out


# --------------------------------------------------------------------------
# a raw TCP device

RAW_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class RawDevice:
    """A raw TCP device on host (127.0.0.1 unless told): for each
    connection it records every byte that arrives until the sender pauses
    (received[]), then answers RAW_REPLY and closes, or with reset=True
    sends a partial response and resets the connection (SO_LINGER 0)."""

    def __init__(self, reset=False, greeting=b"", host=LOOPBACK4):
        self.reset = reset
        self.greeting = greeting  # sent at once on accept, before reading
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.received = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._handle(conn)

    def _handle(self, conn):
        """One connection, in the accepting thread (subclasses may differ)."""
        with conn:
            if self.greeting:
                threading.Thread(target=self._greet, args=(conn,), daemon=True).start()
            self.received.append(self._record(conn))
            self._answer(conn)

    def _greet(self, conn):
        try:
            conn.sendall(self.greeting)
        except OSError:
            pass

    @staticmethod
    def _record(conn):
        conn.settimeout(5)
        data = b""
        try:
            while len(data) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                conn.settimeout(0.3)
        except socket.timeout:
            pass
        return data

    def _answer(self, conn):
        try:
            if self.reset:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
                time.sleep(0.2)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.sendall(RAW_REPLY)
        except OSError:
            pass

    def wait_received(self, before, tries=100):
        """The bytes of the first connection after `before` had arrived."""
        for _ in range(tries):
            if len(self.received) > before:
                return self.received[before]
            time.sleep(0.05)
        raise Failure("nothing reached the device")

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=5)


def access_lines(path):
    """The access lines in the access log file at path so far (none
    before ddport has created it)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line for line in f if "access " in line]
    except FileNotFoundError:
        return []


def send_and_read(port, payload, timeout=10, host=LOOPBACK4):
    """Sends payload on a fresh connection and reads until EOF. Returns
    (our address, reply, the error that ended the read or None)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        me = s.getsockname()
        s.sendall(payload)
        reply = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return me, reply, None
                reply += chunk
        except OSError as exc:
            return me, reply, exc
