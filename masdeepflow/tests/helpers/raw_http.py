"""Raw-socket HTTP clients for the tests.

pipeline PORT: one write with three requests (the last asks to close),
read every response to EOF, print the local port.
split PORT: one request written in three parts 50 ms apart, read to EOF,
print the local port.
churn PORT N: N connections, one request each (Connection: close).
keepalive PORT CONNS N: N requests over CONNS keep-alive connections,
one write each (even ones for /small.txt, odd ones for a missing file),
each response read whole before the next request; prints "done", then
closes the connections when stdin ends.
burst PORT ROUNDS DEPTH READ: one keep-alive connection; each round writes
DEPTH requests in one write (even ones for /small.txt, odd ones for a
missing file) and reads their DEPTH responses with reads of at most READ
bytes; prints the local port and the responses read.
paths PORT N [DEPTH]: N requests to N distinct paths of letters only
(/c/aaaaa, /c/aaaab, ...; nginx answers 404) over one keep-alive
connection, DEPTH (default 1) pipelined at a time, every response read;
prints "done".
hostile PORT: a request whose target and Host hold control bytes, invalid
UTF-8, quotes and backslashes; prints the local port and the status line.
"""
import socket
import sys
import time

def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    return s

def read_all(s):
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return data
        data += d

def pipeline(port):
    s = connect(port)
    reqs = (b"GET /small.txt?p=1 HTTP/1.1\r\nHost: pipe\r\n\r\n"
            b"GET /small.txt?p=2 HTTP/1.1\r\nHost: pipe\r\n\r\n"
            b"GET /missing?p=3 HTTP/1.1\r\nHost: pipe\r\nConnection: close\r\n\r\n")
    s.sendall(reqs)
    data = read_all(s)
    print(s.getsockname()[1], flush=True)
    print(data.count(b"HTTP/1.1 "), flush=True)
    s.close()

def split(port):
    s = connect(port)
    for part in (b"GE", b"T /small.txt?split=1 HTTP/1.1\r\nHo", b"st: split\r\nConnection: close\r\n\r\n"):
        s.sendall(part)
        time.sleep(0.05)
    data = read_all(s)
    print(s.getsockname()[1], flush=True)
    print(data.split(b"\r\n")[0].decode(), flush=True)
    s.close()

def churn(port, n):
    req = b"GET /small.txt HTTP/1.1\r\nHost: churn\r\nConnection: close\r\n\r\n"
    for _ in range(n):
        s = connect(port)
        s.sendall(req)
        read_all(s)
        s.close()
    print(n, flush=True)

def read_response(s, buf, size=65536):
    """One response (Content-Length framed) from `s`, read `size` bytes at
    most at a time; returns the bytes after it."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(size)
        if not d:
            raise SystemExit("connection closed mid-response")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        d = s.recv(size)
        if not d:
            raise SystemExit("connection closed mid-body")
        rest += d
    return rest[length:]

def keepalive(port, conns, n):
    socks = [connect(port) for _ in range(conns)]
    for i in range(n):
        s = socks[i % conns]
        path = b"/small.txt" if i % 2 == 0 else b"/missing"
        s.sendall(b"GET " + path + b"?n=" + str(i).encode() + b" HTTP/1.1\r\nHost: flood\r\n\r\n")
        if read_response(s, b""):
            raise SystemExit("unexpected bytes after a response")
    print("done", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()

def burst(port, rounds, depth, size):
    s = connect(port)
    got = 0
    for r in range(rounds):
        reqs = b"".join(
            b"GET " + (b"/small.txt" if i % 2 == 0 else b"/missing") + b"?r=%d&i=%d HTTP/1.1\r\nHost: burst\r\n\r\n" % (r, i)
            for i in range(depth))
        s.sendall(reqs)
        rest = b""
        for _ in range(depth):
            rest = read_response(s, rest, size)
            got += 1
        if rest:
            raise SystemExit("unexpected bytes after a round's responses")
    print(s.getsockname()[1], flush=True)
    print(got, flush=True)
    s.close()

def word(i):
    letters = []
    for _ in range(5):
        letters.append(chr(ord("a") + i % 26))
        i //= 26
    return "".join(reversed(letters)).encode()

def paths(port, n, depth):
    s = connect(port)
    rest = b""
    for start in range(0, n, depth):
        window = range(start, min(n, start + depth))
        s.sendall(b"".join(b"GET /c/" + word(i) + b" HTTP/1.1\r\nHost: paths\r\n\r\n" for i in window))
        for _ in window:
            rest = read_response(s, rest)
    print("done", flush=True)
    s.close()

def hostile(port):
    s = connect(port)
    s.sendall(b'GET /a\x1b[31mred\x01\x7f\xff"q\\ HTTP/1.1\r\nHost: h\x01\r\nConnection: close\r\n\r\n')
    data = read_all(s)
    print(s.getsockname()[1], flush=True)
    print(data.split(b"\r\n")[0].decode(), flush=True)
    s.close()

if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "pipeline":
        pipeline(port)
    elif mode == "split":
        split(port)
    elif mode == "keepalive":
        keepalive(port, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "burst":
        burst(port, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif mode == "paths":
        paths(port, int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    elif mode == "hostile":
        hostile(port)
    else:
        churn(port, int(sys.argv[3]))
