#!/usr/bin/python3
"""A reload reaches the DNS side: the zone serial rises, AXFR lists the
devices now in force, and the secondaries get a NOTIFY with the new serial.
A UDP socket of the test plays the secondary. Loopback only."""

import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
import dnsmsg  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

CONFIG = """\
workers: 2
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{http_port}}}
proxy: {{allow_targets: [127.0.0.0/8], access_log: off}}
reload: {{watch: false}}
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - name: ddport.test
      proxy: [127.0.0.1]
      nameservers: [ns1.ddport.test]
      glue: {{ns1.ddport.test: [127.0.0.1]}}
      notify: [127.0.0.1:{secondary_port}]
      allow_transfer: [127.0.0.1/32]
devices:
{devices}"""

DEVICE = "  {name}: {{address: 127.0.0.1, ports: {{http: 10080}}}}\n"
NOTIFY_OPCODE = 4


class Env:
    pass


def write_config(env, names):
    devices = "".join(DEVICE.format(name=n) for n in names)
    return ddtest.write_file(env.dir, "ddport.yaml", CONFIG.format(
        http_port=env.http_port, dns_port=env.dns_port,
        secondary_port=env.secondary_port, devices=devices))


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.secondary = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    env.secondary.bind(("127.0.0.1", 0))
    env.secondary_port = env.secondary.getsockname()[1]
    env.http_port = ddtest.free_port(udp_too=False)
    env.dns_port = ddtest.free_port()
    config = write_config(env, ["one.ddport.test"])
    env.ddport = ddtest.Ddport(config, env.dir, tcp_ports=[env.http_port],
                               udp_ports=[env.dns_port])
    ddtest.started(env, teardown, env.ddport.start)
    return env


def teardown(env):
    try:
        ddtest.stop_checked(env.ddport)
    finally:
        env.secondary.close()
        env.tmp.cleanup()


def soa_serial(env):
    reply = dnsmsg.Message(dnsmsg.udp_exchange(env.dns_port,
                                               dnsmsg.build_query("ddport.test", "SOA")))
    check_eq(len(reply.answer), 1, "SOA answers")
    return int(reply.answer[0].text(reply.data).split()[2])


def axfr_names(env):
    """Owner names of the A records of an AXFR over TCP."""
    names = set()
    with dnsmsg.tcp_connect(env.dns_port) as s:
        s.sendall(dnsmsg.frame(dnsmsg.build_query("ddport.test", "AXFR")))
        soas = 0
        for _ in range(100):
            msg = dnsmsg.Message(dnsmsg.recv_frame(s))
            check_eq(msg.rcode, 0, "AXFR rcode")
            for rec in msg.answer:
                if rec.type == 6:
                    soas += 1
                elif rec.type == 1:
                    names.add(rec.name.rstrip(".").lower())
            if soas >= 2:
                return names
    raise ddtest.Failure("AXFR did not end with a second SOA")


def next_notify(env, timeout=15):
    """Waits for a NOTIFY, acknowledges it, returns the serial it carries."""
    env.secondary.settimeout(0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data, peer = env.secondary.recvfrom(4096)
        except socket.timeout:
            continue
        msg = dnsmsg.Message(data)
        if (msg.flags >> 11) & 0xF != NOTIFY_OPCODE:
            continue
        ack = struct.pack("!HHHHHH", msg.id, 0x8000 | (NOTIFY_OPCODE << 11) | 0x0400,
                          0, 0, 0, 0)
        env.secondary.sendto(ack, peer)
        soas = [r for r in msg.answer if r.type == 6]
        check_eq(len(soas), 1, "SOA records in the NOTIFY")
        return int(soas[0].text(msg.data).split()[2])
    raise ddtest.Failure("no NOTIFY within %d s" % timeout)


def reload(env, names):
    write_config(env, names)
    env.ddport.reload()


def test_reload_raises_serial_and_notifies(env):
    start_serial = soa_serial(env)
    check_eq(next_notify(env), start_serial, "serial in the NOTIFY at start")
    check_eq(axfr_names(env), {"one.ddport.test", "ns1.ddport.test"}, "AXFR before")

    reload(env, ["one.ddport.test", "two.ddport.test"])
    # The change is published with the next batch of the serial (at most a
    # second, two right after the start): the NOTIFY says when.
    new_serial = next_notify(env)
    check(((new_serial - start_serial) & 0xFFFFFFFF) in range(1, 1 << 31),
          "serial did not rise: %d -> %d" % (start_serial, new_serial))
    check_eq(soa_serial(env), new_serial, "SOA serial after the NOTIFY")
    check_eq(axfr_names(env), {"one.ddport.test", "two.ddport.test", "ns1.ddport.test"},
             "AXFR after adding a device")

    reload(env, ["two.ddport.test"])
    check(next_notify(env) != new_serial, "serial unchanged by the second reload")
    check_eq(axfr_names(env), {"two.ddport.test", "ns1.ddport.test"},
             "AXFR after removing a device")


CASES = [
    ("a reload raises the serial, AXFR follows it, secondaries are notified",
     test_reload_raises_serial_and_notifies),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
