#!/usr/bin/env python3
"""An SSH server standing in for the sandbox supervisor's (docs/relay.md,
"Supervisor SSH server facts"), on asyncssh, a real SSH implementation:
`none` auth for any user, `exec` runs the command with /bin/sh -c, a shell
request runs /bin/sh, a pty-req sets TERM (no real terminal), `direct-tcpip` only to loopback.
Listens on 127.0.0.1:0 and prints `listening PORT`, then serves until killed.

The "sandbox" is this machine, so a port forwarded to the sandbox's
loopback port P may be mapped to another local port Q with the argument
`P=Q` (the CLI forwards the same port number on both ends).
"""
import asyncio
import os
import sys

import asyncssh

CHUNK = 64 * 1024
PORT_MAP = dict(tuple(int(x) for x in a.split("=")) for a in sys.argv[1:])
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Forward(asyncssh.SSHTCPSession):
    """One direct-tcpip channel carried to a local TCP connection."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def connection_made(self, chan):
        self.chan = chan
        asyncio.ensure_future(self.pump())

    async def pump(self):
        while True:
            data = await self.reader.read(CHUNK)
            if not data:
                self.chan.write_eof()
                return
            self.chan.write(data)

    def data_received(self, data, datatype):
        self.writer.write(data)

    def eof_received(self):
        self.writer.write_eof()

    def connection_lost(self, exc):
        self.writer.close()


class Server(asyncssh.SSHServer):
    def begin_auth(self, username):
        return False  # no authentication required: `none` succeeds

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        if dest_host not in LOOPBACK:
            return False

        async def open_forward():
            r, w = await asyncio.open_connection("127.0.0.1", PORT_MAP.get(dest_port, dest_port))
            return Forward(r, w)

        return open_forward()


async def pump(src, dst):
    while True:
        data = await src.read(CHUNK)
        if not data:
            break
        dst.write(data)
        await dst.drain()


async def pump_in(process, proc):
    try:
        while True:
            data = await process.stdin.read(CHUNK)
            if not data:
                break
            proc.stdin.write(data)
            await proc.stdin.drain()
    except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged, ConnectionError):
        pass
    finally:
        proc.stdin.close()


async def handle(process):
    cmd = process.command
    argv = ["/bin/sh", "-c", cmd] if cmd else ["/bin/sh"]
    env = {k: v for k, v in os.environ.items() if k != "TERM"}
    if process.term_type:  # a pty-req came: its terminal type, as sshd sets it
        env["TERM"] = process.term_type
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    feeder = asyncio.ensure_future(pump_in(process, proc))
    await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
    code = await proc.wait()
    feeder.cancel()
    process.exit(code)


async def main():
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        Server,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        process_factory=handle,
        encoding=None,
        allow_pty=True,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
