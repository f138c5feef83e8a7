"""HTTP/1.1 server for the latency tests: GET answers after DELAY_MS with a
fixed body; POST reads its Content-Length body and answers 201 with the
number of bytes read. Usage: slow_http.py PORT DELAY_MS"""
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

DELAY = int(sys.argv[2]) / 1000.0

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        time.sleep(DELAY)
        self.reply(200, b"slow response body\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        got = 0
        while got < n:
            chunk = self.rfile.read(min(65536, n - got))
            if not chunk:
                break
            got += len(chunk)
        self.reply(201, str(got).encode())

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
