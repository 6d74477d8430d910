#!/usr/bin/python3
"""The relay after routing, run once per way of relaying (argument: the
proxy.splice value, on or off): 10 MiB both ways at once, half-close either
way, resets either way (found by a read or by a failed write, or after a
FIN), the idle timeout, a slow reader, the access log's byte counts and a
drain on SIGTERM; and the wakeups when one side waits for the other: a
visitor sending before it reads, a device reading late, a burst then
silence (only re-arming gets it read), a reset behind unread bytes. A
scripted raw device plays the other end. Loopback only; every wait
bounded."""

import errno
import hashlib
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

SPLICE = sys.argv[1] if len(sys.argv) > 1 else "auto"

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{port}}}
proxy:
  timeouts: {{peek: 3s, connect: 3s, idle: {idle}, drain: {drain}}}
  allow_targets: [127.0.0.1/32]
  access_log: {log}
  splice: {splice}
devices:
  dev.ddport.test: {{address: 127.0.0.1, ports: {{http: {device}}}}}
"""

MIB = 1024 * 1024


def pattern(n, seed=0):
    """n deterministic bytes that catch reordering and loss."""
    block = bytes((i * 7 + seed) & 0xFF for i in range(65521))  # prime length
    out = block * (n // len(block) + 1)
    return out[:n]


def head(path):
    return b"GET %s HTTP/1.1\r\nHost: dev.ddport.test\r\n\r\n" % path.encode()


def send_until_stalled(sock, quiet=0.5, limit=256 * MIB, deadline_s=30):
    """Sends until sock has taken no byte for quiet seconds: every buffer
    on the way to a peer that does not read is full. Returns the bytes
    sent."""
    chunk = memoryview(pattern(1 << 20, 21))
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + deadline_s
    while sent < limit and time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], quiet)
        if not writable:
            break
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            continue
    sock.settimeout(20)
    return sent


def how_it_ends(sock, timeout=10):
    """Waits up to timeout seconds for the connection to end (a FIN or a
    reset), then reads what is left: "reset" or "eof" ("open" if neither
    came)."""
    poll = select.poll()
    poll.register(sock, select.POLLRDHUP | select.POLLERR | select.POLLHUP)
    poll.poll(timeout * 1000)
    sock.settimeout(20)
    try:
        read_to_eof(sock, deadline_s=20)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "open"
    return "eof"


def reset_after_eof(sock, timeout=10):
    """After the FIN has been read: the error of a reset that follows it
    within timeout seconds, or 0."""
    poll = select.poll()
    poll.register(sock, select.POLLERR | select.POLLHUP)
    poll.poll(timeout * 1000)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def stopped(d):
    """ddport stopped with SIGSTOP: its sockets carry on in the kernel
    while it reads none of them. Give it back with resumed()."""
    os.kill(d.proc.pid, signal.SIGSTOP)
    _, status = os.waitpid(d.proc.pid, os.WUNTRACED)
    check(os.WIFSTOPPED(status), "ddport did not stop: status %#x" % status)


def resumed(d):
    os.kill(d.proc.pid, signal.SIGCONT)


class Device(ddtest.RawDevice):
    """A raw device that reads each request head and acts on its path:
    /echo/N, /down/N, /reset, /await-reset, /half/N, /hold, /late-sink/N,
    /burst/N, /burst-reset/N, /stall-sink, /stall-reset, /fin-reset/N,
    /close/N, /answer/N, each connection in a thread of its own. What it saw goes to
    self.events (a list of (path, detail)); go(path) lets a device waiting
    for the test carry on."""

    def __init__(self, host=ddtest.LOOPBACK4):
        self.events = []
        self.signals = {}
        super().__init__(host=host)

    def go(self, path):
        self.signals.setdefault(path, threading.Event()).set()

    def _told(self, path):
        return self.signals.setdefault(path, threading.Event()).wait(20)

    def wait_event(self, path, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, detail in self.events:
                if p == path:
                    return detail
            time.sleep(0.05)
        return None

    def _handle(self, conn):
        threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _serve_one(self, conn):
        with conn:
            conn.settimeout(20)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            line, rest = data.split(b"\r\n", 1)[0], data.split(b"\r\n\r\n", 1)[1]
            path = line.split()[1].decode()
            parts = path.split("/")
            try:
                getattr(self, "_" + parts[1].replace("-", "_"))(conn, parts, rest)
            except OSError as exc:
                self.events.append((path, exc))

    def _echo(self, conn, parts, rest):
        """Echoes every byte after the head until EOF, then closes."""
        got = len(rest)
        if rest:
            conn.sendall(rest)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += len(chunk)
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        self.events.append(("/" + "/".join(parts[1:]), got))

    def _down(self, conn, parts, rest):
        conn.sendall(pattern(int(parts[2]), 3))
        self.events.append(("/" + "/".join(parts[1:]), "sent"))

    def _reset(self, conn, parts, rest):
        conn.sendall(b"partial" * 1000)
        time.sleep(0.3)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _await_reset(self, conn, parts, rest):
        conn.sendall(b"ready")
        try:
            while conn.recv(65536):
                pass
            self.events.append(("/await-reset", "eof"))
        except ConnectionResetError:
            self.events.append(("/await-reset", "reset"))

    def _half(self, conn, parts, rest):
        """Says its piece and half-closes, then counts what still comes."""
        conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)
        got = len(rest)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        self.events.append(("/half/" + parts[2], got))

    def _late_sink(self, conn, parts, rest):
        """Reads nothing for a second, then N bytes; answers their digest."""
        time.sleep(1.0)
        h, got = hashlib.sha256(rest), len(rest)
        while got < int(parts[2]):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += len(chunk)
            h.update(chunk)
        conn.sendall(h.hexdigest().encode())
        conn.shutdown(socket.SHUT_WR)
        self.events.append(("/" + "/".join(parts[1:]), got))

    def _burst(self, conn, parts, rest):
        """Sends N bytes in one go, then stays quiet (no FIN) until the
        visitor is gone: nothing new arrives to wake the proxy up."""
        conn.sendall(pattern(int(parts[2]), 7))
        while conn.recv(65536):
            pass

    def _burst_reset(self, conn, parts, rest):
        """Sends what of N bytes its socket takes within a second, then
        resets the connection."""
        conn.settimeout(1.0)
        try:
            conn.sendall(pattern(int(parts[2]), 9))
        except socket.timeout:
            pass
        time.sleep(0.3)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.events.append(("/" + "/".join(parts[1:]), "reset"))

    def _stall_sink(self, conn, parts, rest):
        """Says "ready" and reads nothing; once told, says "more", then
        records whether the connection ended in a reset or a FIN."""
        conn.sendall(b"ready")
        if not self._told("/stall-sink"):
            return
        conn.sendall(b"more")
        self.events.append(("/stall-sink", how_it_ends(conn)))

    def _stall_reset(self, conn, parts, rest):
        """Sends until nothing more fits on the way to the visitor, then
        resets the connection."""
        send_until_stalled(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.events.append(("/stall-reset", "reset"))

    def _fin_reset(self, conn, parts, rest):
        """Sends N bytes; once told, "tail", a FIN and then a reset."""
        conn.sendall(pattern(int(parts[2]), 13))
        if not self._told("/fin-reset"):
            return
        conn.sendall(b"tail")
        conn.shutdown(socket.SHUT_WR)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.events.append(("/fin-reset", "reset"))

    def _close(self, conn, parts, rest):
        """Sends N bytes and closes: bytes arriving later are answered by
        its kernel with a reset."""
        conn.sendall(pattern(int(parts[2]), 14))
        conn.close()

    def _answer(self, conn, parts, rest):
        """Answers N bytes and closes, bytes and FIN in one segment (a
        web server answering Connection: close does the same)."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        conn.sendall(pattern(int(parts[2]), 15))
        conn.shutdown(socket.SHUT_WR)

    def _hold(self, conn, parts, rest):
        try:
            eof = conn.recv(1) == b""
        except ConnectionResetError:
            eof = False
        self.events.append(("/hold", "eof" if eof else "reset"))


class Env:
    pass


def start(env, name, idle="1m", drain="5s"):
    port = ddtest.free_port(udp_too=False)
    log = os.path.join(env.dir, name + ".access.log")
    config = ddtest.write_file(env.dir, name + ".yaml", CONFIG.format(
        port=port, idle=idle, drain=drain, log=log, splice=SPLICE,
        device=env.device.port))
    d = ddtest.Ddport(config, env.dir, tcp_ports=[port], name=name).start()
    d.port = port
    d.log = log
    return d


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.device = Device()
    env.ddport = ddtest.started(env, teardown, lambda: start(env, "main"))
    return env


def teardown(env):
    try:
        ddtest.stop_checked(env.ddport)
    finally:
        env.device.stop()
        env.tmp.cleanup()


def connect(port, buffers=None):
    """A connection to the proxy; buffers: its SO_RCVBUF and SO_SNDBUF, so
    that little waits in the visitor's own kernel."""
    s = socket.socket()
    if buffers:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def read_to_eof(s, limit=128 * MIB, chunk=1 << 20, pause=0.0, deadline_s=60):
    """What arrives until EOF, limit bytes or deadline_s; pause: seconds
    to sleep after each read (a slow reader)."""
    data = bytearray()
    deadline = time.monotonic() + deadline_s
    while len(data) < limit and time.monotonic() < deadline:
        got = s.recv(min(chunk, limit - len(data)))
        if not got:
            break
        data += got
        if pause:
            time.sleep(pause)
    return bytes(data)


def access_line(d, before, tries=100, name="dev.ddport.test"):
    """The first access line for the device name after the first before
    lines, once it is written (readiness probes log lines with name=-)."""
    for _ in range(tries):
        for line in ddtest.access_lines(d.log)[before:]:
            if "name=%s " % name in line:
                return line
        time.sleep(0.05)
    return None


def n_lines(d):
    return len(ddtest.access_lines(d.log))


def echo_both_ways(env, size, seed, buffers=None, read_after=0.0):
    """Sends size bytes to the echo device from a thread while this one
    reads them back, starting read_after seconds later; all must arrive."""
    up = pattern(size, seed)
    path = "/echo/%d" % size
    s = connect(env.ddport.port, buffers)
    s.settimeout(20)
    sent_error = []

    def send():
        try:
            s.sendall(head(path) + up)
            s.shutdown(socket.SHUT_WR)
        except OSError as exc:
            sent_error.append(exc)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    if read_after:
        time.sleep(read_after)
        check(t.is_alive(), "%d bytes went through although nobody read the echo" % size)
    back = read_to_eof(s)
    t.join(20)
    s.close()
    check(not sent_error, "sending failed: %r" % sent_error)
    check_eq(len(back), size, "bytes echoed back")
    check(back == up, "the echo differs from what was sent")
    check_eq(env.device.wait_event(path), size, "bytes at the device")


def test_both_ways_at_once(env):
    echo_both_ways(env, 10 * MIB, 1)


def test_download_and_access_log(env):
    before = n_lines(env.ddport)
    size = 10 * MIB
    req = head("/down/%d" % size)
    s = connect(env.ddport.port)
    s.sendall(req)
    s.settimeout(20)
    body = read_to_eof(s)
    s.close()
    check_eq(len(body), size, "bytes downloaded")
    check(body == pattern(size, 3), "the download differs from what the device sent")
    line = access_line(env.ddport, before)
    check(line is not None, "no access line")
    check("result=routed" in line, "result: %s" % line.strip())
    check("bytes_in=%d " % len(req) in line, "bytes_in: %s" % line.strip())
    check("bytes_out=%d " % size in line, "bytes_out: %s" % line.strip())


def test_client_half_close(env):
    # The visitor sends and half-closes; the device still answers in full.
    size = 3 * MIB
    up = pattern(size, 5)
    s = connect(env.ddport.port)
    s.sendall(head("/echo/half-%d" % size) + up)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(20)
    back = read_to_eof(s)
    s.close()
    check(back == up, "echo after the visitor's FIN: %d bytes" % len(back))


def test_bytes_and_fin_right_after_the_head(env):
    # What the visitor sends while the device is still being reached waits
    # with the head, its FIN too; all of it arrives, in order.
    for n in range(20):
        body = pattern(100 + n, n)
        s = connect(env.ddport.port)
        s.sendall(head("/echo/early-%d" % n))
        s.sendall(body[:50])
        s.sendall(body[50:])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        back = read_to_eof(s)
        s.close()
        check_eq(back, body, "echo of bytes sent before the relay started")


def test_device_half_close(env):
    # The device half-closes first; the visitor's later bytes still reach it.
    size = 2 * MIB
    s = connect(env.ddport.port)
    s.sendall(head("/half/%d" % size))
    s.settimeout(10)
    got = b""
    while len(got) < 3:
        chunk = s.recv(16)
        if not chunk:
            break
        got += chunk
    check_eq(got, b"bye", "the device's words")
    check_eq(s.recv(16), b"", "the device's FIN reaches the visitor")
    s.sendall(pattern(size))
    s.shutdown(socket.SHUT_WR)
    check_eq(env.device.wait_event("/half/%d" % size), size,
             "bytes at the device after its own FIN")
    check_eq(s.recv(16), b"", "the device's close ends the connection")
    s.close()


def test_device_reset(env):
    before = n_lines(env.ddport)
    s = connect(env.ddport.port)
    s.sendall(head("/reset"))
    s.settimeout(10)
    data, err = b"", None
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        err = exc
    s.close()
    check_eq(data, b"partial" * 1000, "bytes before the reset")
    check(isinstance(err, ConnectionResetError),
          "expected a reset after the bytes, got %r" % (err,))
    line = access_line(env.ddport, before)
    check(line is not None and "result=reset" in line, "access line: %r" % line)


def test_visitor_reset(env):
    s = connect(env.ddport.port)
    s.sendall(head("/await-reset"))
    s.settimeout(10)
    check_eq(s.recv(5), b"ready", "the device answered")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    check_eq(env.device.wait_event("/await-reset"), "reset",
             "what the device saw of the visitor's reset")


def test_idle_timeout(env):
    d = start(env, "idle", idle="1s")
    try:
        before = n_lines(d)
        s = connect(d.port)
        s.sendall(head("/hold"))
        s.settimeout(10)
        t0 = time.monotonic()
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        waited = time.monotonic() - t0
        s.close()
        check(closed, "the idle connection was not closed")
        check(0.5 <= waited < 8, "closed after %.1fs, idle is 1s" % waited)
        line = access_line(d, before)
        check(line is not None and "result=idle timeout" in line, "access line: %r" % line)
    finally:
        check_eq(d.stop(), 0, "exit status")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_reader(env):
    # The visitor reads nothing for a while: the proxy must stop reading the
    # device rather than hold the whole download in memory.
    size = 32 * MIB
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(20)
    s.connect(("127.0.0.1", env.ddport.port))
    rss_before = rss_kib(env.ddport.proc.pid)
    s.sendall(head("/down/%d" % size))
    time.sleep(1.5)
    grown = rss_kib(env.ddport.proc.pid) - rss_before
    check(grown < 4096, "ddport grew by %d KiB while the visitor did not read" % grown)
    check(env.device.wait_event("/down/%d" % size, timeout=0.1) is None,
          "the device got rid of all 32 MiB while the visitor read nothing")
    body = bytearray()
    while len(body) < size:
        chunk = s.recv(256 * 1024)
        if not chunk:
            break
        body += chunk
    s.close()
    check_eq(len(body), size, "bytes read slowly")
    check(bytes(body) == pattern(size, 3), "the slow download differs")


def test_drain_on_sigterm(env):
    # A transfer in flight when SIGTERM comes finishes within the drain time.
    d = start(env, "drain", drain="10s")
    size = 8 * MIB
    s = connect(d.port)
    s.settimeout(20)
    s.sendall(head("/down/%d" % size))
    first = s.recv(65536)
    d.proc.send_signal(15)
    time.sleep(0.3)
    body = first + read_to_eof(s)
    s.close()
    check_eq(len(body), size, "bytes of the download in flight")
    check(body == pattern(size, 3), "the drained download differs")
    # A second SIGTERM would end the drain: wait for ddport to exit alone.
    try:
        rc = d.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        rc = d.stop()
    check_eq(rc, 0, "exit status after draining")


def test_visitor_sends_before_reading(env):
    # The visitor sends 64 MiB and reads nothing until its sending blocks:
    # the echo fills the way back, the device stops reading, and every
    # socket on the way stalls (receive buffers here may grow to 32 MiB:
    # 32 MiB sometimes all fits). Then the visitor reads: each stalled side
    # must be woken as the one after it drains.
    echo_both_ways(env, 64 * MIB, 11, buffers=256 * 1024, read_after=1.5)


def test_device_reads_late(env):
    # The device reads nothing for a second: the body waits in the proxy,
    # which must carry on once the device drains its socket.
    size = 8 * MIB
    body = pattern(size, 12)
    path = "/late-sink/%d" % size
    s = connect(env.ddport.port)
    s.settimeout(20)
    s.sendall(head(path) + body)
    s.shutdown(socket.SHUT_WR)
    answer = read_to_eof(s, limit=1024)
    s.close()
    check_eq(env.device.wait_event(path), size, "bytes at the device")
    check_eq(answer.decode(), hashlib.sha256(body).hexdigest(), "the device's digest")


def test_burst_then_silence(env):
    # Far more than 16 relay reads' worth waits in the proxy's socket when
    # the visitor starts reading, and the device then sends nothing more:
    # only re-arming the device's socket after 16 reads gets the rest out.
    for size, wait, chunk, pause in ((8 * MIB, 1.0, 256 * 1024, 0.002),
                                     (4 * MIB, 0.5, 1 << 20, 0.0)):
        s = connect(env.ddport.port)
        s.settimeout(20)
        s.sendall(head("/burst/%d" % size))
        time.sleep(wait)
        try:
            body = read_to_eof(s, limit=size, chunk=chunk, pause=pause, deadline_s=20)
        except socket.timeout:
            body = b""
        s.close()
        check_eq(len(body), size, "bytes of the burst (read %d at a time)" % chunk)
        check(body == pattern(size, 7), "the burst differs from what the device sent")


def test_reset_behind_unread_bytes(env):
    # The device sends more than the proxy's socket buffers take, then
    # resets while the visitor reads nothing: the bytes still come, then a
    # reset, not a FIN that would pass a truncated stream off as complete.
    size = 16 * MIB
    path = "/burst-reset/%d" % size
    s = connect(env.ddport.port, buffers=64 * 1024)
    s.settimeout(20)
    s.sendall(head(path))
    check_eq(env.device.wait_event(path), "reset", "what the device did")
    time.sleep(0.3)
    data, err = bytearray(), None
    try:
        data += read_to_eof(s, deadline_s=20)
    except OSError as exc:
        err = exc
    s.close()
    check(err is not None, "a clean end after the device's reset")
    check(isinstance(err, ConnectionResetError), "expected a reset, got %r" % (err,))


def check_reset_logged(env, before, name="dev.ddport.test"):
    line = access_line(env.ddport, before, name=name)
    check(line is not None and "result=reset" in line, "access line: %r" % line)


def test_write_to_reset_visitor(env):
    # The visitor's upload waits in the proxy for a device that reads
    # nothing, and the visitor resets: the proxy does not read it again
    # until the upload moves on. The device then answers; writing that to
    # the visitor fails, and the device must be reset, not sent a FIN.
    before = n_lines(env.ddport)
    s = connect(env.ddport.port, buffers=64 * 1024)
    s.settimeout(20)
    s.sendall(head("/stall-sink"))
    check_eq(s.recv(5), b"ready", "the device answered")
    check(send_until_stalled(s) > 0, "nothing could be uploaded")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    env.device.go("/stall-sink")
    check_eq(env.device.wait_event("/stall-sink", timeout=60), "reset",
             "how the connection ended at the device")
    check_reset_logged(env, before)


def test_write_to_reset_device(env):
    # The device's download waits in the proxy for a visitor that reads
    # nothing, and the device resets. The visitor then sends; writing that
    # to the device fails, and the visitor must be reset, not sent a FIN.
    before = n_lines(env.ddport)
    s = connect(env.ddport.port, buffers=64 * 1024)
    s.settimeout(20)
    s.sendall(head("/stall-reset"))
    check_eq(env.device.wait_event("/stall-reset", timeout=60), "reset",
             "what the device did")
    s.sendall(b"more")
    check_eq(how_it_ends(s), "reset", "how the connection ended at the visitor")
    s.close()
    check_reset_logged(env, before)


def read_first(env, path, seed):
    """A connection asking path of the device, which sends the N bytes of
    pattern(N, seed) (N the path's number) first: they are read."""
    size = int(path.split("/")[2])
    s = connect(env.ddport.port)
    s.settimeout(20)
    s.sendall(head(path))
    body = read_to_eof(s, limit=size)
    check(body == pattern(size, seed), "the first %d bytes differ (%d read)" % (size, len(body)))
    return s


def test_fin_then_reset_unread(env):
    # With ddport stopped, the device sends its last bytes, a FIN and a
    # reset: resumed, the proxy reads the bytes and then the end of the
    # stream, which Linux returns as a FIN although a reset followed it.
    # The visitor must get the bytes and then a reset.
    before = n_lines(env.ddport)
    s = read_first(env, "/fin-reset/%d" % MIB, 13)
    stopped(env.ddport)
    try:
        env.device.go("/fin-reset")
        check_eq(env.device.wait_event("/fin-reset"), "reset", "what the device did")
    finally:
        resumed(env.ddport)
    tail, err = b"", None
    try:
        tail = read_to_eof(s, deadline_s=20)
    except OSError as exc:
        err = exc
    s.close()
    check(isinstance(err, ConnectionResetError),
          "expected a reset after the tail, got %r after %r" % (err, tail))
    check_reset_logged(env, before)


def test_reset_after_fin(env):
    # The device sends and closes: its FIN reaches the visitor. The
    # visitor's later bytes meet the closed socket, whose kernel resets;
    # the visitor must be told by a reset too.
    before = n_lines(env.ddport)
    s = read_first(env, "/close/%d" % MIB, 14)
    check_eq(s.recv(16), b"", "the device's FIN reaches the visitor")
    s.sendall(b"more")
    check(reset_after_eof(s) in (errno.EPIPE, errno.ECONNRESET),
          "no reset reached the visitor after the device's")
    s.close()
    check_reset_logged(env, before)


def segments_in(sock):
    """tcpi_segs_in of struct tcp_info: the segments sock has received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 140)[0]


def answer_segments(port):
    """The segments a visitor receives for a short answer and a close."""
    s = connect(port)
    s.sendall(head("/answer/300"))
    body = read_to_eof(s)
    check(body == pattern(300, 15), "the answer differs: %r" % body[:40])
    n = segments_in(s)
    s.close()
    return n


def test_answer_and_fin_together(env):
    # A device's answer and its FIN, arriving together, reach the visitor
    # together too: no more segments than from the device itself.
    direct = answer_segments(env.device.port)
    proxied = answer_segments(env.ddport.port)
    check(proxied <= direct,
          "%d segments through ddport, %d from the device" % (proxied, direct))


def test_spliced_or_not(env):
    text = env.ddport.stderr_text()
    check(re.search(r"error|warn", text, re.I) is None,
          "warnings in the log: %s" % env.ddport.stderr_tail())


CASES = [
    ("10 MiB up and 10 MiB down at once, byte for byte", test_both_ways_at_once),
    ("10 MiB download intact; the access log counts its bytes",
     test_download_and_access_log),
    ("the visitor's half-close: the device still answers in full", test_client_half_close),
    ("bytes and a FIN sent right after the head all arrive",
     test_bytes_and_fin_right_after_the_head),
    ("the device's half-close: the visitor's later bytes still arrive",
     test_device_half_close),
    ("a device's reset reaches the visitor as a reset", test_device_reset),
    ("a visitor's reset reaches the device as a reset", test_visitor_reset),
    ("a relay with no bytes for timeouts.idle is closed", test_idle_timeout),
    ("a slow reader holds the device back, not ddport's memory", test_slow_reader),
    ("SIGTERM lets a transfer in flight finish", test_drain_on_sigterm),
    ("a visitor sending 64 MiB before reading its echo gets it all back",
     test_visitor_sends_before_reading),
    ("a device reading late still gets the whole body", test_device_reads_late),
    ("a burst far above 16 reads, then silence, all reaches a slow reader",
     test_burst_then_silence),
    ("a device's reset behind unread bytes reaches the visitor as a reset",
     test_reset_behind_unread_bytes),
    ("a write to a visitor that reset resets the device", test_write_to_reset_visitor),
    ("a write to a device that reset resets the visitor", test_write_to_reset_device),
    ("a device's FIN with a reset behind it, read together, reaches the visitor as a reset",
     test_fin_then_reset_unread),
    ("a device's reset after its FIN reaches the visitor as a reset", test_reset_after_fin),
    ("an answer and its FIN arrive in as few segments as from the device",
     test_answer_and_fin_together),
    ("no warnings logged", test_spliced_or_not),
]

if __name__ == "__main__":
    ddtest.run_cases([("[splice %s] %s" % (SPLICE, name), fn) for name, fn in CASES],
                     setup=setup, teardown=teardown)
