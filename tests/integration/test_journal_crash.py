#!/usr/bin/python3
"""The journal survives SIGKILL: a helper (tests/journal_crash.c) appends
records and prints each sequence number only after its commit returned;
this script kills it mid-stream by PID, several times over one state
directory, then replays the journal with the helper's dump mode and checks
that every sequence number printed as committed is there and that no
record is corrupt. It also decodes the files itself, from the format
documented in docs/updates.md, to hold the C code to that document."""

import os
import random
import select
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

HELPER = os.environ.get("JOURNAL_CRASH") or os.path.join(ddtest.SOURCE, "build", "tests", "journal_crash")
N_NAMES = 7  # as in journal_crash.c
BIG_COUNT = "100000000"  # never reached: every run is killed first
ROUNDS = 3
RNG = random.Random(int(os.environ.get("DDTEST_SEED", "20240607")))


class Env:
    pass


def setup():
    check(os.access(HELPER, os.X_OK), "no helper at %s (set JOURNAL_CRASH)" % HELPER)
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    return env


def teardown(env):
    env.tmp.cleanup()


# --------------------------------------------------------------------------
# running the helper


def committed_lines(data):
    """Sequence numbers from complete 'committed N' lines."""
    seqs = []
    for line in data.split(b"\n")[:-1]:  # the last piece is incomplete or empty
        parts = line.split()
        check(len(parts) == 2 and parts[0] == b"committed", "unexpected helper output %r" % line)
        seqs.append(int(parts[1]))
    return seqs


def run_and_kill(env, args, want, deadline_s=60):
    """Starts the helper, reads its output until it has printed `want`
    committed lines, kills it with SIGKILL by PID and returns every
    sequence number it printed as committed."""
    err_path = os.path.join(env.dir, "helper.stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([HELPER] + args, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err)
    ddtest._live.append(proc)
    data = b""
    try:
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + deadline_s
        for _ in range(1000000):
            if data.count(b"\n") >= want or time.monotonic() > deadline:
                break
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # the helper ended by itself
                data += chunk
        check(data.count(b"\n") >= want,
              "helper printed %d committed lines, wanted %d; stderr: %s"
              % (data.count(b"\n"), want, open(err_path, "rb").read()[-400:]))
        proc.kill()  # SIGKILL, by PID
        proc.wait(timeout=10)
        # What it printed before it died is still in the pipe.
        for _ in range(100000):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        ddtest.stop_process(proc, timeout=10)
        proc.stdout.close()
    check_eq(proc.returncode, -9, "helper exit status (killed by SIGKILL)")
    return committed_lines(data)


def dump(state_dir):
    """Replays the journal with the helper. Returns ([(seq, name)], {stat: n})."""
    proc = ddtest.run([HELPER, "dump", state_dir], timeout=60)
    check(proc.returncode == 0,
          "dump exit status %d (3: a replayed record does not match its sequence number): %s %s"
          % (proc.returncode, proc.stdout[-400:], proc.stderr[-400:]))
    records, end = [], None
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[0] == "record":
            records.append((int(parts[1]), parts[2]))
        elif parts[0] == "end":
            end = {k: int(v) for k, v in (p.split("=") for p in parts[1:])}
    check(end is not None, "dump printed no end line: %r" % proc.stdout[-200:])
    return records, end


def crash_rounds(env, name, mode, extra):
    """Runs the helper `ROUNDS` times over one state directory, each killed
    after a random number of committed records. Returns (dir, acked)."""
    state_dir = os.path.join(env.dir, name)
    acked = []
    for _ in range(ROUNDS):
        want = RNG.randint(50, 400)
        seqs = run_and_kill(env, [mode, state_dir, BIG_COUNT] + extra, want)
        check(all(a < b for a, b in zip(seqs, seqs[1:])), "committed sequence numbers not increasing")
        if acked and seqs:
            check(seqs[0] > acked[-1],
                  "after a restart, numbering went back: %d after %d" % (seqs[0], acked[-1]))
        acked += seqs
    return state_dir, acked


def run_to_end(state_dir, mode, count, extra):
    """Runs the helper over state_dir until it finishes by itself; returns
    the sequence numbers it printed as committed."""
    proc = subprocess.run([HELPER, mode, state_dir, str(count)] + extra, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120)
    check_eq(proc.returncode, 0, "helper exit status (stderr %r)" % proc.stderr[-400:])
    return committed_lines(proc.stdout)


def check_every_ack_present(records, acked):
    seqs = [seq for seq, _ in records]
    check(all(a < b for a, b in zip(seqs, seqs[1:])), "replayed sequence numbers not increasing")
    present = set(seqs)
    missing = [s for s in acked if s not in present]
    check(not missing, "%d committed records missing after SIGKILL, first %s" % (len(missing), missing[:5]))
    for seq, name in records:
        check_eq(name, "dev%d.crash.test" % (seq % N_NAMES), "name of record %d" % seq)


def check_newest_per_name(records, acked):
    """With compaction only each name's newest state survives: it must be at
    least as new as the newest one acknowledged."""
    final = {}
    for seq, name in records:
        final[name] = seq  # replay order: snapshot, then the log
    for seq in acked:
        name = "dev%d.crash.test" % (seq % N_NAMES)
        check(final.get(name, 0) >= seq,
              "%s replays as record %s, but record %d was acknowledged" % (name, final.get(name), seq))


# --------------------------------------------------------------------------
# an independent reader of the on-disk format (docs/updates.md)


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def decode_records(data):
    """Decodes a run of records; returns (records, clean)."""
    out, off = [], 0
    while off < len(data):
        if len(data) - off < 8:
            return out, False
        length, crc = struct.unpack_from("<II", data, off)
        payload = data[off + 8:off + 8 + length]
        if len(payload) < length or crc32c(payload, crc32c(data[off:off + 4])) != crc:
            return out, False
        p = 0
        kind, seq, time_ms, tag, flags, name_len = struct.unpack_from("<BQQQBB", payload, p)
        p += 27
        check_eq(kind, 1, "record type")
        name = payload[p:p + name_len].decode()
        p += name_len
        addrs = []
        n_addrs = payload[p]
        p += 1
        for _ in range(n_addrs):
            family = payload[p]
            size = 4 if family == 4 else 16
            addrs.append(bytes(payload[p + 1:p + 1 + size]))
            p += 1 + size
        ports = {}
        n_ports = payload[p]
        p += 1
        for _ in range(n_ports):
            n = payload[p]
            listener = payload[p + 1:p + 1 + n].decode()
            (ports[listener],) = struct.unpack_from("<H", payload, p + 1 + n)
            p += 1 + n + 2
        check_eq(p, length, "bytes of record %d used" % seq)
        out.append(dict(seq=seq, time_ms=time_ms, tag=tag, offline=bool(flags & 1),
                        name=name, addrs=addrs, ports=ports))
        off += 8 + length
    return out, True


def expected(seq):
    """journal_crash.c's record_for(), in Python."""
    addrs = [bytes([10, (seq >> 16) & 255, (seq >> 8) & 255, seq & 255])]
    if seq % 2:
        addrs.append(bytes([0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0]) + struct.pack(">Q", seq))
    ports = {"http": 1 + seq % 65535}
    if seq % 3 == 0:
        ports["https"] = 1 + (seq * 7) % 65535
    return dict(seq=seq, time_ms=seq * 1000, tag=(seq * 0x9E3779B97F4A7C15) & (2**64 - 1),
                offline=seq % 11 == 0, name="dev%d.crash.test" % (seq % N_NAMES),
                addrs=addrs, ports=ports)


def read_files(state_dir):
    """(snapshot covered seq or None, snapshot records, log records)."""
    covered, snap = None, []
    path = os.path.join(state_dir, "snapshot")
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
        check_eq(data[:8], b"ddportS1", "snapshot magic")
        (covered,) = struct.unpack_from("<Q", data, 8)
        check_eq(struct.unpack_from("<I", data, 16)[0], crc32c(data[:16]), "snapshot header CRC")
        snap, clean = decode_records(data[20:])
        check(clean, "snapshot has a bad record after %d good ones" % len(snap))
    with open(os.path.join(state_dir, "journal"), "rb") as f:
        data = f.read()
    check_eq(data[:8], b"ddportJ1", "journal magic")
    log, clean = decode_records(data[8:])
    check(clean, "journal has a bad record after %d good ones (dump should have cut it)" % len(log))
    return covered, snap, log


# --------------------------------------------------------------------------
# cases


def t_append_one_per_commit(env):
    state_dir, acked = crash_rounds(env, "one", "append", ["1"])
    records, end = dump(state_dir)
    check_every_ack_present(records, acked)
    check_eq(end["snapshot"], 0, "snapshot records")
    env.plain_dir = state_dir


def t_append_group_commit(env):
    state_dir, acked = crash_rounds(env, "group", "append", ["16"])
    records, _ = dump(state_dir)
    check_every_ack_present(records, acked)


def t_writer_thread(env):
    state_dir, acked = crash_rounds(env, "writer", "writer", ["64"])
    records, _ = dump(state_dir)
    check_every_ack_present(records, acked)


def t_append_with_compaction(env):
    state_dir, acked = crash_rounds(env, "compact", "append", ["4", "25"])
    # A last run that ends by itself has compacted at least once.
    acked += run_to_end(state_dir, "append", 100, ["4", "25"])
    records, end = dump(state_dir)
    check_newest_per_name(records, acked)
    check(end["snapshot"] > 0, "no snapshot was written: %r" % end)
    env.compact_dir = state_dir


def t_writer_with_compaction(env):
    state_dir, acked = crash_rounds(env, "writer-compact", "writer", ["64", "40"])
    acked += run_to_end(state_dir, "writer", 100, ["64", "40"])
    records, end = dump(state_dir)
    check_newest_per_name(records, acked)
    check(end["snapshot"] > 0, "no snapshot was written: %r" % end)


def t_format_as_documented(env):
    if not getattr(env, "plain_dir", None) or not getattr(env, "compact_dir", None):
        raise ddtest.Skip("needs the directories of the cases above")
    covered, snap, log = read_files(env.plain_dir)
    check(covered is None and not snap, "a snapshot where none was made")
    records, _ = dump(env.plain_dir)
    check_eq([r["seq"] for r in log], [seq for seq, _ in records], "records read by Python vs replayed")
    for r in log:
        check_eq(r, expected(r["seq"]), "record %d as decoded by Python" % r["seq"])
    covered, snap, log = read_files(env.compact_dir)
    check(covered is not None and len(snap) <= N_NAMES, "snapshot: covered %r, %d records" % (covered, len(snap)))
    for r in snap + log:
        check_eq(r, expected(r["seq"]), "record %d as decoded by Python" % r["seq"])
    check(all(r["seq"] <= covered for r in snap), "snapshot record newer than it claims to cover")


def t_torn_tail_cut(env):
    """A torn last record, made by hand: dropped once, with what precedes."""
    if not getattr(env, "plain_dir", None):
        raise ddtest.Skip("needs the directory of the first case")
    records, _ = dump(env.plain_dir)
    path = os.path.join(env.plain_dir, "journal")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 5)
    after, end = dump(env.plain_dir)
    check_eq(after, records[:-1], "records after cutting 5 bytes off the last")
    check(end["dropped"] > 0, "no bytes reported dropped: %r" % end)
    check(os.path.exists(os.path.join(env.plain_dir, "journal.dropped")), "journal.dropped not kept")
    again, end = dump(env.plain_dir)
    check_eq(again, after, "records on the next replay")
    check_eq(end["dropped"], 0, "bytes dropped on the next replay")


CASES = [
    ("SIGKILL during one-record commits: every committed record replays", t_append_one_per_commit),
    ("SIGKILL during group commits of 16: every committed record replays", t_append_group_commit),
    ("SIGKILL with the writer thread, 64 in flight: every committed record replays",
     t_writer_thread),
    ("SIGKILL with compaction every 25 commits: no committed state lost", t_append_with_compaction),
    ("SIGKILL with the writer thread compacting: no committed state lost", t_writer_with_compaction),
    ("journal and snapshot files decode as docs/updates.md describes", t_format_as_documented),
    ("a torn last record is dropped once, the rest kept", t_torn_tail_cut),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
