#!/usr/bin/python3
# demo_device.py -- plays a device: a tiny web server behind the proxy.
import http.server
import sys

PAGE = b"""<!doctype html>
<title>demo device</title>
<h1>Hello from the demo device</h1>
<p>This page was served on 127.0.0.1:10080 and relayed by ddport.</p>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, fmt, *args):
        sys.stderr.write("demo device: %s %s\n" % (self.address_string(), fmt % args))


host, port = sys.argv[1], int(sys.argv[2])
http.server.ThreadingHTTPServer((host, port), Handler).serve_forever()
