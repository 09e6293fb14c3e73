#!/usr/bin/env python3
"""A host's link to the outside, and the fault injector.

Listens on unix sockets (one per service) that a host namespace reaches through socat, and
forwards each connection to a loopback TCP address in the root namespace. The link's state is
read from a file on every change:

  up         forward
  cut        refuse: close new connections at once and drop the open ones
  blackhole  accept and swallow, never answer
  delay:MS   forward, holding each chunk MS milliseconds
"""
import argparse
import asyncio
import os
import sys


class Link:
    def __init__(self, mode_file):
        self.mode_file = mode_file
        self.mode = "up"
        self.connections = set()

    def read_mode(self):
        try:
            with open(self.mode_file) as f:
                return f.read().strip() or "up"
        except FileNotFoundError:
            return "up"

    async def watch(self):
        while True:
            mode = self.read_mode()
            if mode != self.mode:
                self.mode = mode
                if mode in ("cut", "blackhole"):
                    for w in list(self.connections):
                        w.transport.abort()
            await asyncio.sleep(0.05)

    def delay(self):
        if self.mode.startswith("delay:"):
            return int(self.mode.split(":", 1)[1]) / 1000.0
        return 0.0


async def pump(link, reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            d = link.delay()
            if d:
                await asyncio.sleep(d)
            if link.mode != "up" and not link.mode.startswith("delay:"):
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def handler(link, host, port):
    async def handle(reader, writer):
        link.connections.add(writer)
        try:
            if link.mode == "cut":
                return
            if link.mode == "blackhole":
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                return
            link.connections.add(up_writer)
            try:
                await asyncio.gather(pump(link, reader, up_writer), pump(link, up_reader, writer))
            finally:
                link.connections.discard(up_writer)
        except (ConnectionError, OSError):
            pass
        finally:
            link.connections.discard(writer)
            try:
                writer.close()
            except Exception:
                pass
    return handle


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode-file", required=True)
    p.add_argument("--route", action="append", required=True, help="SOCKET=HOST:PORT")
    args = p.parse_args()
    link = Link(args.mode_file)
    servers = []
    for r in args.route:
        sock, target = r.split("=", 1)
        host, port = target.rsplit(":", 1)
        if os.path.exists(sock):
            os.unlink(sock)
        servers.append(await asyncio.start_unix_server(handler(link, host, int(port)), path=sock))
    print("ready", flush=True)
    await link.watch()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
