"""Real TCP peers for the end-to-end tests.

server FAMILY RECV SEND [sendfile]: listen on loopback, print the port,
accept one connection, read exactly RECV bytes, send SEND bytes (with
sendfile(2) from a temporary file when asked), close.
client FAMILY PORT SEND: connect, print the local port, send SEND bytes
(in chunks of CHUNK every PAUSE seconds when given), read to EOF, print
the byte count, close.
"""
import socket
import sys
import time

def family(name):
    return (socket.AF_INET, "127.0.0.1") if name == "ipv4" else (socket.AF_INET6, "::1")

def server(fam, want, send, use_sendfile=False):
    af, host = family(fam)
    s = socket.socket(af, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(1)
    print(s.getsockname()[1], flush=True)
    c, _ = s.accept()
    got = 0
    while got < want:
        d = c.recv(65536)
        if not d:
            break
        got += len(d)
    if use_sendfile:
        import tempfile
        with tempfile.TemporaryFile() as f:
            f.write(b"s" * send)
            f.flush()
            f.seek(0)
            c.sendfile(f)
    else:
        c.sendall(b"s" * send)
    c.close()
    s.close()
    print(got, flush=True)

def client(fam, port, send, chunk, pause):
    af, host = family(fam)
    c = socket.socket(af, socket.SOCK_STREAM)
    c.connect((host, port))
    print(c.getsockname()[1], flush=True)
    left = send
    while left > 0:
        n = min(chunk, left)
        c.sendall(b"c" * n)
        left -= n
        if pause and left > 0:
            time.sleep(pause)
    got = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        got += len(d)
    c.close()
    print(got, flush=True)

if __name__ == "__main__":
    role = sys.argv[1]
    if role == "server":
        server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:] == ["sendfile"])
    else:
        send = int(sys.argv[4])
        chunk = int(sys.argv[5]) if len(sys.argv) > 5 else send
        pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
        client(sys.argv[2], int(sys.argv[3]), send, chunk, pause)
