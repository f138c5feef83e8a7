"""Replays recorded kube-apiserver responses for Services and
EndpointSlices (not a real cluster: no kube-apiserver can run here).

Usage: kube_services_replay.py PORT SERVICELIST_JSON ENDPOINTSLICELIST_JSON
GET /api/v1/services and /apis/discovery.k8s.io/v1/endpointslices answer
with the recorded lists; a watch (watch=true or watch=1) answers 200 with a
chunked body and stays open. POST /control/services or
/control/endpointslices with a watch event (JSON) sends it, as one line, on
that resource's open watches. Every GET is printed to stdout (flushed) as
"list <resource>" or "watch <resource>".
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LISTS = {"services": open(sys.argv[2], "rb").read(), "endpointslices": open(sys.argv[3], "rb").read()}
PATHS = {"/api/v1/services": "services", "/apis/discovery.k8s.io/v1/endpointslices": "endpointslices"}
watchers = {"services": [], "endpointslices": []}
lock = threading.Lock()
print_lock = threading.Lock()


def say(line):
    with print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        resource = self.path.rsplit("/", 1)[-1]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        line = json.dumps(json.loads(body)).encode() + b"\n"
        sent = 0
        with lock:
            for w in list(watchers.get(resource, [])):
                try:
                    w.write(b"%x\r\n%s\r\n" % (len(line), line))
                    w.flush()
                    sent += 1
                except OSError:
                    watchers[resource].remove(w)
        reply = str(sent).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):
        url = urlparse(self.path)
        resource = PATHS.get(url.path)
        if resource is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if parse_qs(url.query).get("watch", [""])[0] in ("true", "1"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            with lock:
                watchers[resource].append(self.wfile)
            say("watch " + resource)
            threading.Event().wait()
        say("list " + resource)
        body = LISTS[resource]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
