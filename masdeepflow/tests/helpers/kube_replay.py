"""Replays recorded kube-apiserver responses (not a real cluster).

Usage: kube_replay.py PORT PODLIST_JSON
GET /api/v1/pods (a list) answers with the PodList file; a watch
(watch=true or watch=1) answers 200 with a chunked body and then stays
open without events, as a quiet real watch does. Every request line is
printed to stdout (flushed) so the test can assert what the client asked.
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PODLIST = open(sys.argv[2], "rb").read()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        print(self.path, flush=True)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path != "/api/v1/pods":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if query.get("watch", [""])[0] in ("true", "1"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            while True:
                time.sleep(1)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(PODLIST)))
        self.end_headers()
        self.wfile.write(PODLIST)

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
