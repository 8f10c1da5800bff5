"""Length-prefixed pickle frames over a raw pipe between the runner and its children.

One ``os.write`` per frame and one ``os.read`` for as many frames as the pipe holds: the runner
collects the results of many tasks with a single system call.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Iterator
from typing import Any

_HEADER = struct.Struct("!I")
_READ_SIZE = 1 << 16


def encode(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def write_frame(fd: int, message: Any) -> None:
    """Write one frame, looping over partial writes (frames larger than the pipe buffer)."""
    write_bytes(fd, encode(message))


def write_bytes(fd: int, data: bytes) -> None:
    """Write encoded frames whole, looping over partial writes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FrameReader:
    """Splits the bytes read from ``fd`` into decoded messages."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self.closed = False

    def read_available(self) -> list[Any]:
        """One read (which may block when the fd is blocking); returns the complete frames
        received so far. Sets ``closed`` when the writer is gone."""
        self._read_once()
        return list(self._complete_frames())

    def read_remaining(self) -> list[Any]:
        """Every complete frame the pipe still holds, read until it is empty (its writer has
        exited: nothing more is coming from it)."""
        while self._read_once():
            pass
        return list(self._complete_frames())

    def _read_once(self) -> bool:
        """One read into the buffer; False when nothing came (the pipe is empty or closed)."""
        try:
            chunk = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return False
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        return True

    def _complete_frames(self) -> Iterator[Any]:
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buffer, offset)
            end = offset + _HEADER.size + length
            if end > len(buffer):
                break
            yield pickle.loads(buffer[offset + _HEADER.size:end])
            offset = end
        del buffer[:offset]
