"""A backend for the gateway tests: answers every TCP connection and every
UDP datagram with its own id, on ADDRESS:PORT (TCP and UDP).

Usage: gw_echo.py ID HOST PORT
TCP: sends ID, then echoes what it receives until the client closes.
UDP: answers each datagram with ID. Prints "ready" once both listen.
"""
import socket
import sys
import threading

ident, host, port = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
tcp = socket.socket(family, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((host, port))
tcp.listen(4096)
udp = socket.socket(family, socket.SOCK_DGRAM)
udp.bind((host, port))


def serve_udp():
    while True:
        _, addr = udp.recvfrom(2048)
        udp.sendto(ident, addr)


def serve_tcp(conn):
    try:
        conn.sendall(ident)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = tcp.accept()
    threading.Thread(target=serve_tcp, args=(c,), daemon=True).start()
