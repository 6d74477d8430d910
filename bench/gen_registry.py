#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""gen_registry.py -- writes a configuration with N generated devices, in
the format bench/run's registry scenario uses, for timing `ddport check`
and `ddport serve` by hand.

Usage: bench/gen_registry.py N DIR [--port P]
Writes DIR/config.yaml; above 1M devices the devices go into DIR/devices.d/
(files of 500k names: ddport reads files of at most 64 MiB)."""
import argparse
import os

ZONE = "bench.test"
PER_FILE = 500000


def write_devices(path, first, end, port):
    with open(path, "w") as f:
        f.write("devices:\n")
        for i in range(first, end):
            f.write(f"  r{i}.{ZONE}: {{address: 127.0.0.1, ports: "
                    f"{{http: {port}}}}}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--dns-port", type=int, default=18053)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    files = -(-a.n // PER_FILE) if a.n > 10**6 else 1
    folder = os.path.join(a.dir, "devices.d")
    cfg = os.path.join(a.dir, "config.yaml")
    with open(cfg, "w") as f:
        f.write(f"workers: 2\nlisteners:\n"
                f"  - {{name: http, protocol: http, address: "
                f"127.0.0.1:{a.port}}}\n"
                f"proxy: {{access_log: off, allow_targets: [127.0.0.0/8]}}\n"
                f"dns:\n  listen: [127.0.0.1:{a.dns_port}]\n  zones:\n"
                f"    - {{name: {ZONE}, proxy: [127.0.0.1], "
                f"nameservers: [ns1.{ZONE}], glue: {{ns1.{ZONE}: "
                f"[127.0.0.1]}}, soa: {{email: hostmaster@{ZONE}}}}}\n"
                + (f"registry: [{folder}]\n" if files > 1 else ""))
    if files == 1:
        with open(cfg, "a") as f:
            f.write("devices:\n")
            for i in range(a.n):
                f.write(f"  r{i}.{ZONE}: {{address: 127.0.0.1, ports: "
                        f"{{http: {a.port}}}}}\n")
    else:
        os.makedirs(folder, exist_ok=True)
        for k in range(files):
            write_devices(os.path.join(folder, f"{k:03d}.yaml"),
                          k * PER_FILE, min(a.n, (k + 1) * PER_FILE), a.port)


if __name__ == "__main__":
    main()
