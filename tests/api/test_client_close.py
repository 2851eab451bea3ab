"""The blocking client's connection is closed only by its reader thread.

A socket closed from another thread while the reader is about to call recv() frees its
descriptor number; a new connection can get the same number, and the stale reader then
reads, and swallows, the new connection's response. (Seen as a put that the daemon
answered within 50 ms and the client never received: a flake in the rolling-restart
test, about one run in ten under load.)
"""

from __future__ import annotations

import socket
import threading

from raftd.client._sync import _Conn


class RecordingSocket(socket.socket):
    """A socket that remembers which threads closed it."""

    closed_by: list[str]

    def close(self) -> None:
        if not hasattr(self, "closed_by"):
            self.closed_by = []
        self.closed_by.append(threading.current_thread().name)
        super().close()


def make_pair() -> tuple[RecordingSocket, socket.socket]:
    a, b = socket.socketpair()
    ours = RecordingSocket(a.family, a.type, fileno=a.detach())
    return ours, b


def test_close_leaves_the_socket_to_the_reader_thread() -> None:
    sock, peer = make_pair()
    conn = _Conn(sock, 1 << 20)
    try:
        conn.close()
        conn.thread.join(5)
        assert not conn.thread.is_alive()
        assert sock.closed_by == ["raftd-client"]  # not the caller (MainThread)
        assert sock.fileno() == -1
    finally:
        peer.close()


def test_the_daemon_closing_first_also_closes_the_socket_once() -> None:
    sock, peer = make_pair()
    conn = _Conn(sock, 1 << 20)
    peer.close()  # end of file for the reader
    conn.thread.join(5)
    assert not conn.thread.is_alive()
    conn.close()  # after the reader is gone: nothing left to do
    assert sock.closed_by == ["raftd-client"]
    assert sock.fileno() == -1
