"""Keeps the processed events: the newest in memory for `/_admin/events`, all in a JSONL file.

Each record is `{"seq", "ad_account_id", "received_at", "event"}`: `seq` numbers events from 0
since start or reset, `received_at` is the arrival time (Unix seconds, float), and `event` is the
event as received (keys in the spec's order; fields that were absent stay absent). In memory each
request's body is kept as bytes with the positions of its processed events, and decoded again
only when asked for: recording costs the hot path one append, and the bytes are invisible to the
garbage collector, which would otherwise rescan every kept event over and over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec


class Recorder:
    """Holds up to `keep` recent events in memory and appends every event to `path` if given."""

    def __init__(self, path: Path | None, keep: int, decode: Callable[[bytes], list[Any]]) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._decode = decode
        self._keep = keep
        self._file: IO[bytes] | None = path.open("ab") if path is not None else None
        self.reset()

    def reset(self) -> None:
        """Forgets the in-memory events and restarts `seq` at 0; the file is left as it is."""
        # (first seq, count, ad account, received at, body, positions of its processed events)
        self._chunks: deque[tuple[int, int, str, float, bytes, tuple[int, ...] | None]] = deque()
        self._held = 0
        self.total = 0

    def record(
        self,
        account: str,
        received_at: float,
        events: list[Any],
        body: bytes,
        positions: tuple[int, ...] | None,
    ) -> None:
        """Keeps `events`, which are the events of `body` at `positions` (None: all of them)."""
        if not events:
            return
        first = self.total
        count = len(events)
        self.total += count
        if self._file is not None:
            self._file.write(
                b"".join(
                    self._line(first + i, account, received_at, e) for i, e in enumerate(events)
                )
            )
            self._file.flush()
        if self._keep <= 0:
            return
        self._chunks.append((first, count, account, received_at, body, positions))
        self._held += count
        while self._held - self._chunks[0][1] >= self._keep:
            self._held -= self._chunks.popleft()[1]

    def since(self, seq: int, limit: int) -> tuple[bytes, int]:
        """A JSON array of up to `limit` records with `seq` ≥ `seq`, and the next `seq` to ask."""
        lines: list[bytes] = []
        next_seq = max(seq, self.total - self._held)
        for first, count, account, received_at, body, positions in self._chunks:
            if first + count <= next_seq:
                continue
            events = self._decode(body)
            if positions is not None:
                events = [events[position] for position in positions]
            for index in range(max(0, next_seq - first), len(events)):
                if len(lines) >= limit:
                    return b"[" + b",".join(lines) + b"]", next_seq
                lines.append(self._line(first + index, account, received_at, events[index])[:-1])
                next_seq = first + index + 1
        return b"[" + b",".join(lines) + b"]", next_seq

    def recent(self, account: str, since: float) -> Iterator[Any]:
        """The kept events of `account` received at or after `since` (decoded structs).

        The chunks are picked when called and decoded as the iterator is consumed, so another
        thread may consume it while this one keeps recording.
        """
        picked = [
            (body, positions)
            for _, _, chunk_account, received_at, body, positions in self._chunks
            if chunk_account == account and received_at >= since
        ]
        return self._decoded(picked)

    def _decoded(self, picked: list[tuple[bytes, tuple[int, ...] | None]]) -> Iterator[Any]:
        for body, positions in picked:
            events = self._decode(body)
            yield from events if positions is None else (events[p] for p in positions)

    def _line(self, seq: int, account: str, received_at: float, event: Any) -> bytes:
        return b'{"seq":%d,"ad_account_id":%b,"received_at":%.6f,"event":%b}\n' % (
            seq,
            self._encode(account),
            received_at,
            self._encode(event),
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
