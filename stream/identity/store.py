"""The store the identity stage reads and writes, and its in-memory form."""

from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    """What the identity stage reads and writes: bytes by key."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class MemoryStore:
    """A dict: for `capi-stream transform` and unit tests (nothing survives the process)."""

    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.entries.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.entries[key] = value

    def delete(self, key: bytes) -> None:
        self.entries.pop(key, None)
