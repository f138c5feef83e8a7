"""Clients for the gateway tests; one JSON line per result on stdout.

gw_client.py tcp HOST PORT N       N sequential connects: {"id","peer"} or {"error","ms"}
gw_client.py udp HOST PORT N       N unconnected sockets, one datagram each: {"id","source"}
gw_client.py udp-sticky HOST PORT N   one unconnected socket, N datagrams: {"id","source"}
gw_client.py udp-connected HOST PORT N   N connected sockets: {"id","source","peer"}
gw_client.py loop HOST PORT SECONDS   connects until told to stop (stdin closed or SECONDS):
                                      prints {"ok":N,"failed":M,"errors":[...]} at the end
gw_client.py hold HOST PORT        connects, prints {"id","peer"}, then waits for a line on
                                   stdin and prints what a send+recv does: {"after": ...}
gw_client.py many HOST PORT N      opens N connections at once, prints {"open"}, closes them
                                   all on a line of stdin, prints {"closed"}
gw_client.py cgroups BASE N HOST PORT   for i < N: moves itself into BASE/c<i> (made by the
                                   test) and connects: {"client": i, "id"}
"""
import json
import os
import select
import socket
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def out(obj):
    print(json.dumps(obj), flush=True)


def connect_once(host, port):
    start = time.monotonic()
    try:
        s = socket.socket(family(host), socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((host, port))
        ident = s.recv(64).decode()
        peer = s.getpeername()
        s.close()
        return {"id": ident, "peer": [peer[0], peer[1]]}
    except OSError as e:
        return {"error": e.errno, "ms": (time.monotonic() - start) * 1000}


mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0
if mode == "tcp":
    for _ in range(int(sys.argv[4])):
        out(connect_once(host, port))
elif mode in ("udp", "udp-sticky", "udp-connected"):
    n = int(sys.argv[4])
    sticky = socket.socket(family(host), socket.SOCK_DGRAM)
    for _ in range(n):
        u = sticky if mode == "udp-sticky" else socket.socket(family(host), socket.SOCK_DGRAM)
        u.settimeout(5)
        try:
            if mode == "udp-connected":
                u.connect((host, port))
                u.send(b"x")
                data, src = u.recvfrom(64)
                peer = u.getpeername()
                out({"id": data.decode(), "source": [src[0], src[1]], "peer": [peer[0], peer[1]]})
            else:
                u.sendto(b"x", (host, port))
                data, src = u.recvfrom(64)
                out({"id": data.decode(), "source": [src[0], src[1]]})
        except OSError as e:
            out({"error": e.errno})
        if u is not sticky:
            u.close()
elif mode == "loop":
    deadline = time.monotonic() + float(sys.argv[4])
    ok, failed, errors = 0, 0, []
    while time.monotonic() < deadline:
        r, _, _ = select.select([sys.stdin], [], [], 0)
        if r and not sys.stdin.readline():
            break
        res = connect_once(host, port)
        if "id" in res and res["peer"] == [host, port]:
            ok += 1
        else:
            failed += 1
            if len(errors) < 10:
                errors.append(res)
    out({"ok": ok, "failed": failed, "errors": errors})
elif mode == "hold":
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.connect((host, port))
    ident = s.recv(64).decode()
    peer = s.getpeername()
    out({"id": ident, "peer": [peer[0], peer[1]]})
    sys.stdin.readline()
    s.settimeout(5)
    try:
        s.sendall(b"ping")
        data = s.recv(64)
        out({"after": data.decode() if data else "eof"})
    except OSError as e:
        out({"after": "error", "errno": e.errno})
elif mode == "many":
    import resource
    n = int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
    held = []
    for _ in range(n):
        s = socket.socket(family(host), socket.SOCK_STREAM)
        s.connect((host, port))
        held.append(s)
    out({"open": len(held)})
    sys.stdin.readline()
    for s in held:
        s.close()
    out({"closed": len(held)})
elif mode == "cgroups":
    base, n = sys.argv[2], int(sys.argv[3])
    host, port = sys.argv[4], int(sys.argv[5])
    for i in range(n):
        with open(os.path.join(base, "c%d" % i, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        res = connect_once(host, port)
        res["client"] = i
        out(res)
    with open(os.path.join(base, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
else:
    sys.exit("unknown mode " + mode)
