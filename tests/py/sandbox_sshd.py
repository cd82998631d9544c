#!/usr/bin/env python3
"""An SSH server standing in for the sandbox supervisor's (docs/relay.md,
"Supervisor SSH server facts"), on asyncssh, a real SSH implementation:
`none` auth for any user, `exec` runs the command with /bin/sh -c, a shell
request runs /bin/sh, PTYs are allowed, `direct-tcpip` only to loopback.
Listens on 127.0.0.1:0 and prints `listening PORT`, then serves until killed.
"""
import asyncio
import sys

import asyncssh

CHUNK = 64 * 1024


class Server(asyncssh.SSHServer):
    def begin_auth(self, username):
        return False  # no authentication required: `none` succeeds

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        return dest_host in ("127.0.0.1", "localhost", "::1")


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
    proc = await asyncio.create_subprocess_exec(
        *argv,
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
