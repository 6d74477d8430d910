"""DNS messages by hand, for the integration tests: build queries, read
answers (names decompressed), frame them for TCP, and sign/verify TSIG
(RFC 8945) with the standard library's hmac. Loopback use only."""

import hashlib
import hmac
import socket
import struct
import time

TYPES = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "OPT": 41,
         "TSIG": 250, "IXFR": 251, "AXFR": 252, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED", 9: "NOTAUTH", 16: "BADVERS", 17: "BADKEY", 18: "BADTIME"}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def canonical_name(name):
    return encode_name(name.lower())


def decode_name(msg, pos):
    """(name, position after the name in place)."""
    labels = []
    end = None
    for _ in range(256):
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            continue
        if n == 0:
            pos += 1
            break
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    return ".".join(labels) + ".", (end if end is not None else pos)


def build_query(name, qtype="A", qid=0x1234, flags=0, edns=None, qclass=1,
                authority=b"", nscount=0):
    """A query; edns is the UDP size to advertise in an OPT, or None."""
    if isinstance(qtype, str):
        qtype = TYPES[qtype]
    arcount = 1 if edns is not None else 0
    msg = struct.pack("!HHHHHH", qid, flags, 1, 0, nscount, arcount)
    msg += encode_name(name) + struct.pack("!HH", qtype, qclass) + authority
    if edns is not None:
        msg += b"\0" + struct.pack("!HHIH", 41, edns, 0, 0)
    return msg


class Record:
    def __init__(self, name, rtype, rclass, ttl, rdata, rdata_at):
        self.name, self.type, self.rclass, self.ttl = name, rtype, rclass, ttl
        self.rdata, self.rdata_at = rdata, rdata_at

    @property
    def type_name(self):
        return TYPE_NAMES.get(self.type, str(self.type))

    def text(self, msg):
        """rdata in presentation form for the types ddport serves."""
        if self.type == 1:
            return socket.inet_ntop(socket.AF_INET, self.rdata)
        if self.type == 28:
            return socket.inet_ntop(socket.AF_INET6, self.rdata)
        if self.type == 2:
            return decode_name(msg, self.rdata_at)[0]
        if self.type == 6:
            mname, p = decode_name(msg, self.rdata_at)
            rname, p = decode_name(msg, p)
            return "%s %s %d %d %d %d %d" % ((mname, rname) + struct.unpack("!5I", msg[p:p + 20]))
        return self.rdata.hex()

    def __repr__(self):
        return "<%s %s %d>" % (self.name, self.type_name, self.ttl)


class Message:
    def __init__(self, data):
        self.data = data
        (self.id, self.flags, qd, an, ns, ar) = struct.unpack("!HHHHHH", data[:12])
        pos = 12
        self.question = []
        for _ in range(qd):
            name, pos = decode_name(data, pos)
            qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
            pos += 4
            self.question.append((name, qtype, qclass))
        self.answer, self.authority, self.additional = [], [], []
        for section, count in ((self.answer, an), (self.authority, ns), (self.additional, ar)):
            for _ in range(count):
                start = pos
                name, pos = decode_name(data, pos)
                rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
                pos += 10
                rec = Record(name, rtype, rclass, ttl, data[pos:pos + rdlen], pos)
                rec.start = start
                section.append(rec)
                pos += rdlen
        if pos != len(data):
            raise ValueError("%d bytes after the last record" % (len(data) - pos))
        self.rcode = self.flags & 0xF
        for rec in self.additional:
            if rec.type == 41:
                self.rcode |= (rec.ttl >> 24) << 4

    @property
    def rcode_name(self):
        return RCODES.get(self.rcode, str(self.rcode))

    def flag(self, name):
        bits = {"qr": 0x8000, "aa": 0x0400, "tc": 0x0200, "rd": 0x0100, "ra": 0x0080}
        return bool(self.flags & bits[name])

    def tsig(self):
        if self.additional and self.additional[-1].type == 250:
            return parse_tsig(self.data, self.additional[-1])
        return None


# ---- TCP ------------------------------------------------------------------


def frame(msg):
    return struct.pack("!H", len(msg)) + msg


def recv_exact(sock, n, deadline):
    out = bytearray()
    for _ in range(100000):
        if len(out) >= n:
            return bytes(out)
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %d of %d bytes" % (len(out), n))
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(out), n))
        out += chunk
    raise TimeoutError("too many reads")


def recv_frame(sock, timeout=10):
    deadline = time.monotonic() + timeout
    (n,) = struct.unpack("!H", recv_exact(sock, 2, deadline))
    return recv_exact(sock, n, deadline)


def tcp_connect(port, host="127.0.0.1", timeout=10):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_peer(sock, timeout=15):
    """True when the peer closes (EOF or reset) within timeout, reading and
    dropping anything it still sends."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.5)
    for _ in range(10000):
        if time.monotonic() > deadline:
            return False
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def udp_exchange(port, msg, host="127.0.0.1", timeout=3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(msg)
        return s.recv(65535)
    finally:
        s.close()


def tcp_exchange(port, msg, timeout=10):
    with tcp_connect(port, timeout=timeout) as s:
        s.sendall(frame(msg))
        return recv_frame(s, timeout)


# ---- TSIG -----------------------------------------------------------------

ALGORITHMS = {"hmac-sha256": hashlib.sha256, "hmac-sha512": hashlib.sha512}


class Tsig:
    def __init__(self, name, algorithm, mac, time_signed, fudge, orig_id, error, other):
        self.name, self.algorithm, self.mac = name, algorithm, mac
        self.time_signed, self.fudge, self.orig_id = time_signed, fudge, orig_id
        self.error, self.other = error, other


def parse_tsig(msg, rec):
    alg, p = decode_name(msg, rec.rdata_at)
    (t_hi, t_lo, fudge, mac_len) = struct.unpack("!HIHH", msg[p:p + 10])
    p += 10
    mac = msg[p:p + mac_len]
    p += mac_len
    orig_id, error, other_len = struct.unpack("!HHH", msg[p:p + 6])
    other = msg[p + 6:p + 6 + other_len]
    t = Tsig(rec.name, alg, mac, (t_hi << 32) | t_lo, fudge, orig_id, error, other)
    t.start = rec.start
    return t


def _variables(name, algorithm, time_signed, fudge, error, other, timers_only=False):
    timers = struct.pack("!HIH", time_signed >> 32, time_signed & 0xFFFFFFFF, fudge)
    if timers_only:
        return timers
    return (canonical_name(name) + struct.pack("!HI", 255, 0) + canonical_name(algorithm)
            + timers + struct.pack("!HH", error, len(other)) + other)


def sign(msg, key_name, algorithm, secret, time_signed=None, fudge=300, request_mac=None,
         error=0, other=b""):
    """msg with a TSIG record appended."""
    if time_signed is None:
        time_signed = int(time.time())
    digest_in = b""
    if request_mac is not None:
        digest_in += struct.pack("!H", len(request_mac)) + request_mac
    digest_in += msg + _variables(key_name, algorithm, time_signed, fudge, error, other)
    mac = hmac.new(secret, digest_in, ALGORITHMS[algorithm]).digest()
    qid = struct.unpack("!H", msg[:2])[0]
    rdata = (encode_name(algorithm) + struct.pack("!HIHH", time_signed >> 32,
                                                  time_signed & 0xFFFFFFFF, fudge, len(mac))
             + mac + struct.pack("!HHH", qid, error, len(other)) + other)
    rr = encode_name(key_name) + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
    ar = struct.unpack("!H", msg[10:12])[0] + 1
    return msg[:10] + struct.pack("!H", ar) + msg[12:] + rr


def verify(data, secret, algorithm, prior_mac, timers_only=False):
    """True when data's TSIG MAC is right. prior_mac: the request's MAC (first
    answer) or the previous message's (later messages of a transfer)."""
    m = Message(data)
    t = m.tsig()
    if t is None:
        return False
    body = bytearray(data[:t.start])
    struct.pack_into("!H", body, 0, t.orig_id)
    struct.pack_into("!H", body, 10, struct.unpack("!H", body[10:12])[0] - 1)
    digest_in = b""
    if prior_mac is not None:
        digest_in += struct.pack("!H", len(prior_mac)) + prior_mac
    digest_in += bytes(body) + _variables(t.name, t.algorithm, t.time_signed, t.fudge,
                                          t.error, t.other, timers_only)
    want = hmac.new(secret, digest_in, ALGORITHMS[algorithm]).digest()
    return hmac.compare_digest(want, t.mac)
