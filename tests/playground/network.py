"""A TCP proxy between the browser and the server whose connections a test can cut: what a
phone going through a tunnel does to a page (Chromium's offline emulation blocks new requests
but leaves a stream already flowing untouched)."""

import contextlib
import socket
import threading
from collections.abc import Iterator


class CuttableLink:
    """Listens on a free local port and forwards every connection to `target_port`."""

    def __init__(self, target_port: int):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._target_port = target_port
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> int:
        """Drop every connection open now, both ways, as a lost network does; how many."""
        with self._lock:
            dropped, self._open = self._open, []
        for sock in dropped:
            _close(sock)
        return len(dropped) // 2

    def close(self) -> None:
        """Stop listening and drop what is open."""
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            with self._lock:
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, target), daemon=True).start()


@contextlib.contextmanager
def cuttable_link(target_port: int) -> Iterator[CuttableLink]:
    """A `CuttableLink` to `target_port`, closed on exit."""
    link = CuttableLink(target_port)
    try:
        yield link
    finally:
        link.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass  # cut
    finally:
        _close(source)
        _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
