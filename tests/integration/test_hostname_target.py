#!/usr/bin/python3
"""Device targets given as hostnames, resolved with c-ares inside ddport's
event loop. A second ddport plays the DNS server the resolver asks (its
zone answers every device name with 127.0.0.1 / ::1), so nothing leaves
loopback and no system resolver is involved."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddtest  # noqa: E402
from ddtest import check, check_eq  # noqa: E402

# The DNS side: a ddport with only a zone. "targets.test" names resolve to
# the proxy addresses of that zone, which here are the backend's loopback.
DNS_CONFIG = """\
workers: 1
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{unused_port}}}
dns:
  listen: [127.0.0.1:{dns_port}]
  zones:
    - name: targets.test
      proxy: [127.0.0.1]
      ttl: 30
    - name: refused.test
      proxy: [192.0.2.1]
      ttl: 30
devices:
  cam.targets.test: {{address: 127.0.0.1, ports: {{http: 1}}}}
  box.refused.test: {{address: 127.0.0.1, ports: {{http: 1}}}}
"""

# One worker: the cache is per worker, and the cache test must hit the
# worker whose cache the first request filled.
PROXY_CONFIG = """\
workers: 1
listeners:
  - {{name: http, protocol: http, address: 127.0.0.1:{http_port}}}
proxy:
  timeouts: {{peek: 3s, connect: 3s, idle: 1m, drain: 1s}}
  allow_targets: [127.0.0.0/8]
  resolvers: [127.0.0.1:{dns_port}]
  access_log: stderr
devices:
  named.ddport.test: {{address: cam.targets.test, ports: {{http: {backend}}}}}
  missing.ddport.test: {{address: nobody.targets.test, ports: {{http: {backend}}}}}
  refused.ddport.test: {{address: box.refused.test, ports: {{http: {backend}}}}}
"""


class Env:
    pass


def setup():
    ddtest.require_binary()
    env = Env()
    env.tmp = ddtest.tempdir()
    env.dir = env.tmp.name
    env.backend = ddtest.Backend()
    env.dns = env.proxy = None
    try:
        env.dns_port = ddtest.free_port()
        env.http_port = ddtest.free_port(udp_too=False)
        dns_config = ddtest.write_file(env.dir, "dns.yaml", DNS_CONFIG.format(
            dns_port=env.dns_port, unused_port=ddtest.free_port(udp_too=False)))
        env.dns = ddtest.Ddport(dns_config, env.dir, udp_ports=[env.dns_port], name="dns")
        env.dns.start()
        proxy_config = ddtest.write_file(env.dir, "proxy.yaml", PROXY_CONFIG.format(
            http_port=env.http_port, dns_port=env.dns_port, backend=env.backend.port))
        env.proxy = ddtest.Ddport(proxy_config, env.dir, tcp_ports=[env.http_port],
                                  name="proxy")
        env.proxy.start()
    except Exception:
        teardown(env)
        raise
    return env


def teardown(env):
    try:
        for d in (env.proxy, env.dns):
            if d is not None and d.running():
                check_eq(d.stop(), 0, "%s exit status after SIGTERM" % d.stderr_path)
    finally:
        env.backend.stop()
        env.tmp.cleanup()


def get(env, host):
    return ddtest.curl(env.dir, "http://127.0.0.1:%d/" % env.http_port,
                       ["-H", "Host: " + host], timeout=30)


def test_hostname_routes(env):
    r = get(env, "named.ddport.test")
    check_eq(r.status, 200, "status through a hostname target")
    check(r.header(ddtest.BACKEND_HEADER) is not None, "answer did not come from the backend")


def test_cached_after_dns_stops(env):
    # The answer is cached by its TTL (30 s): with the DNS server gone the
    # device is still reached.
    check_eq(get(env, "named.ddport.test").status, 200, "first request")
    check_eq(env.dns.stop(), 0, "DNS ddport exit status")
    r = get(env, "named.ddport.test")
    check_eq(r.status, 200, "status from the cached answer")


def test_unresolvable_is_offline(env):
    r = get(env, "missing.ddport.test")
    check_eq(r.status, 502, "status for a hostname that does not resolve")
    check("cannot resolve nobody.targets.test" in env.proxy.stderr_text(),
          "the failure is logged with the hostname")


def test_resolved_address_still_checked(env):
    # box.refused.test resolves to 192.0.2.1, outside allow_targets.
    r = get(env, "refused.ddport.test")
    check_eq(r.status, 502, "status for a hostname resolving to a refused address")
    check("target 192.0.2.1 refused" in env.proxy.stderr_text(),
          "the refusal is logged")


CASES = [
    ("a hostname target is resolved and routed", test_hostname_routes),
    ("a device that does not resolve gets 502", test_unresolvable_is_offline),
    ("resolved addresses still pass the target policy", test_resolved_address_still_checked),
    ("a resolved answer is cached by TTL", test_cached_after_dns_stops),
]

if __name__ == "__main__":
    ddtest.run_cases(CASES, setup=setup, teardown=teardown)
