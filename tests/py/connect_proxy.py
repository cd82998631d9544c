#!/usr/bin/env python3
"""An OpenSSH ProxyCommand doing what `openshell ssh-proxy` does
(docs/relay.md, "CONNECT tunnel"): `CONNECT /connect/ssh` with the sandbox
id and token, read the status line byte by byte up to the blank line, then
carry stdin/stdout. Usage: connect_proxy.py HOST PORT SANDBOX_ID TOKEN.
Exits 1 with the status on stderr if the gateway does not answer 200.
"""
import os
import socket
import sys
import threading

host, port, sandbox_id, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port))
s.sendall(
    (
        f"CONNECT /connect/ssh HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"X-Sandbox-Id: {sandbox_id}\r\nX-Sandbox-Token: {token}\r\n\r\n"
    ).encode()
)
head = b""
while not head.endswith(b"\r\n\r\n"):
    b = s.recv(1)
    if not b:
        sys.stderr.write("gateway closed the connection\n")
        sys.exit(1)
    head += b
status = head.split(b" ", 2)[1].decode()
if status != "200":
    sys.stderr.write(f"gateway CONNECT failed with status {status}\n")
    sys.exit(1)


def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(data)


threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(65536)
    if not data:
        break
    os.write(1, data)
