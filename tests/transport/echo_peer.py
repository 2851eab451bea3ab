"""A transport peer in its own OS process, for the multi-process tests.

Usage: python echo_peer.py DATA_DIR PORT

Prints one JSON line ``{"id": ..., "addrs": [...]}`` once serving, then answers every
APP message with an APP_RESP carrying the same index, over the connection the sender
opened (it never learns the sender's address). Runs until killed or stdin closes.
"""

from __future__ import annotations

import json
import logging
import sys

import trio

from raftd.core.types import Message, MessageType
from raftd.transport.host import configure_logging, listen_addrs_of, load_or_create_identity
from raftd.transport.host import open_host as open_host
from raftd.transport.libp2p import Libp2pTransport

NS = "/raft/test"


async def main(data_dir: str, port: int) -> None:
    kp = load_or_create_identity(data_dir)
    async with open_host(kp, [f"/ip4/127.0.0.1/tcp/{port}"]) as host:
        transport: Libp2pTransport

        def on_message(msg: Message) -> None:
            if msg.type == MessageType.APP:
                reply = Message(
                    MessageType.APP_RESP, to=msg.frm, frm=msg.to, term=msg.term, index=msg.index
                )
                transport.send(msg.frm, reply)

        transport = Libp2pTransport(host, NS, on_message=on_message)
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.run)
            print(json.dumps({"id": transport.local_id, "addrs": listen_addrs_of(host)}))
            sys.stdout.flush()
            # Exit when the parent closes our stdin (or dies).
            stdin = trio.lowlevel.FdStream(0)
            while await stdin.receive_some(1024):
                pass
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    configure_logging(logging.WARNING, stream=sys.stderr)
    trio.run(main, sys.argv[1], int(sys.argv[2]))
