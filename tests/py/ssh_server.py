"""A real SSH server for tests/ssh_client.rs, on asyncssh.

Listens on 127.0.0.1 (port printed on the first stdout line), accepts the
`none` authentication for any user, runs each `exec` as `/bin/sh -c CMD`
(on a pseudo-terminal when one was requested) and sends its exit status.
asyncssh offers strict kex and chacha20-poly1305@openssh.com.

Options: --reject-auth (only password auth, which always fails),
--bad-signature (the exchange-hash signature has a flipped bit),
--rekey-bytes N (the server starts a key re-exchange every N bytes).
Special commands: `__noexit__` writes "bye" and closes with no exit
status; `__signal__` ends with exit-signal KILL.
"""

import argparse
import asyncio
import os
import sys

import asyncssh


class Server(asyncssh.SSHServer):
    def __init__(self, reject):
        self.reject = reject

    def begin_auth(self, username):
        return self.reject  # False: no authentication needed (`none` passes)

    def password_auth_supported(self):
        return self.reject

    def validate_password(self, username, password):
        return False


async def run(process):
    cmd = process.command or ""
    if cmd == "__noexit__":
        process.stdout.write(b"bye")
        await process.stdout.drain()
        process.channel.close()
        return
    if cmd == "__signal__":
        process.exit_with_signal("KILL")
        return
    if process.get_terminal_type():
        master, slave = os.openpty()
        env = dict(os.environ, TERM=process.get_terminal_type())
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env
        )
        os.close(slave)
        out = os.fdopen(master, "rb", buffering=0)
        try:
            await process.redirect(stdout=out, send_eof=False)
        except Exception:
            pass
        code = await proc.wait()
        await asyncio.sleep(0.2)
    else:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

        async def pump(reader, writer):
            while data := await reader.read(32768):
                writer.write(data)
                await writer.drain()

        async def feed():
            while data := await process.stdin.read(32768):
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.close()

        # Flow control both ways: drain() waits on the client's window.
        await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr), feed())
        code = await proc.wait()
    process.exit(code)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reject-auth", action="store_true")
    ap.add_argument("--bad-signature", action="store_true")
    ap.add_argument("--rekey-bytes", type=int, default=None)
    args = ap.parse_args()
    if os.environ.get("SSH_TEST_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG)
        asyncssh.set_debug_level(2)
    key = asyncssh.generate_private_key("ssh-ed25519")
    if args.bad_signature:
        good = asyncssh.public_key.SSHLocalKeyPair.sign

        def bad(self, data):
            sig = bytearray(good(self, data))
            sig[-1] ^= 1
            return bytes(sig)

        asyncssh.public_key.SSHLocalKeyPair.sign = bad
    extra = {}
    if args.rekey_bytes:
        extra["rekey_bytes"] = args.rekey_bytes
    server = await asyncssh.create_server(
        lambda: Server(args.reject_auth),
        "127.0.0.1",
        0,
        server_host_keys=[key],
        process_factory=run,
        encoding=None,
        line_editor=False,
        **extra,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    # Exit when the test (our parent) closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
