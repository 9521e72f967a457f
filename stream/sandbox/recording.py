"""Keeps the processed events: the newest in memory for `/_admin/events`, all in a JSONL file.

Each record is `{"seq", "ad_account_id", "received_at", "event"}`: `seq` numbers events from 0
since start or reset, `received_at` is the arrival time (Unix seconds, float), and `event` is the
event as received (keys in the spec's order; fields that were absent stay absent). In memory the
decoded events are kept per request and only encoded when asked for, so recording costs the
hot path one list append.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import IO, Any

import msgspec


class Recorder:
    """Holds up to `keep` recent events in memory and appends every event to `path` if given."""

    def __init__(self, path: Path | None, keep: int) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._keep = keep
        self._file: IO[bytes] | None = path.open("ab") if path is not None else None
        self.reset()

    def reset(self) -> None:
        """Forgets the in-memory events and restarts `seq` at 0; the file is left as it is."""
        self._chunks: deque[tuple[int, str, float, list[Any]]] = deque()
        self._held = 0
        self.total = 0

    def record(self, account: str, received_at: float, events: list[Any]) -> None:
        if not events:
            return
        first = self.total
        self.total += len(events)
        if self._file is not None:
            self._file.write(
                b"".join(
                    self._line(first + i, account, received_at, e) for i, e in enumerate(events)
                )
            )
            self._file.flush()
        if self._keep <= 0:
            return
        self._chunks.append((first, account, received_at, events))
        self._held += len(events)
        while self._held - len(self._chunks[0][3]) >= self._keep:
            self._held -= len(self._chunks.popleft()[3])

    def since(self, seq: int, limit: int) -> tuple[bytes, int]:
        """A JSON array of up to `limit` records with `seq` ≥ `seq`, and the next `seq` to ask."""
        lines: list[bytes] = []
        next_seq = max(seq, self.total - self._held)
        for first, account, received_at, events in self._chunks:
            if first + len(events) <= next_seq:
                continue
            for index in range(max(0, next_seq - first), len(events)):
                if len(lines) >= limit:
                    return b"[" + b",".join(lines) + b"]", next_seq
                lines.append(self._line(first + index, account, received_at, events[index])[:-1])
                next_seq = first + index + 1
        return b"[" + b",".join(lines) + b"]", next_seq

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
