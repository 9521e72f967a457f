"""Per-ad-account request quota over fixed one-minute windows, reported like Pinterest's headers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

WINDOW_S: Final = 60.0
# Pinterest's quota name for the Conversions API, as its x-ratelimit-limit header spells it.
QUOTA_NAME: Final = "ads_conversions_ad_account_id"


def limit_header(limit: int) -> str:
    """x-ratelimit-limit as Pinterest sends it: `120000, 120000;w=60;name="…"`."""
    return f'{limit}, {limit};w={WINDOW_S:.0f};name="{QUOTA_NAME}"'


@dataclass(frozen=True, slots=True)
class Quota:
    """The outcome of asking for one request: allowed or not, and the `x-ratelimit-*` values."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": limit_header(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset_s),
        }


class RateLimiter:
    """Counts requests per ad account; a window opens with an account's first request in it."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}

    def reset(self) -> None:
        self._windows.clear()

    def take(self, account: str, limit: int, now: float) -> Quota:
        start, used = self._windows.get(account, (now, 0))
        if now - start >= WINDOW_S:
            start, used = now, 0
        reset_s = max(1, math.ceil(start + WINDOW_S - now))
        if used >= limit:
            self._windows[account] = (start, used)
            return Quota(False, limit, 0, reset_s)
        used += 1
        self._windows[account] = (start, used)
        return Quota(True, limit, limit - used, reset_s)
