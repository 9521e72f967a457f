"""Removes personal data from page URLs before they are sent as `event_source_url` (pure)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_plus

DEFAULT_KEPT_PARAMETERS: Final = ("epik", "utm_*")
# An email address, or a run of 7+ digits once phone punctuation is ignored: a phone number,
# a card or account number. Checked on the percent-decoded value.
# Anchored on the "@" (a look-behind for the local part) so a long value is scanned in linear time.
_EMAIL: Final = re.compile(r"(?<=[^\s@])@[^\s@]+\.[^\s@]")
_DIGIT_RUN: Final = re.compile(r"[0-9]{7,}")
_ISO_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9:.]+Z?)?")
_PHONE_PUNCTUATION: Final = str.maketrans("", "", " -.()+/")
# Pages recur across a visitor's events; long URLs are scrubbed but not remembered.
MEMO_SIZE: Final = 4096
MEMO_MAX_URL_CHARS: Final = 2048
# Parameters examined per query or fragment; the rest of a longer one (a hostile 1 MB URL of
# 30,000 parameters) is dropped unexamined, which keeps the work per message bounded.
MAX_PARAMETERS: Final = 256


def holds_personal_data(value: str) -> bool:
    """True when a decoded parameter value looks like an email address or a phone number."""
    if _EMAIL.search(value) or _DIGIT_RUN.search(value):
        return True
    # Phone punctuation may split the digits (415-555-0100), but a date is not a phone number.
    return not _ISO_DATE.fullmatch(value) and bool(
        _DIGIT_RUN.search(value.translate(_PHONE_PUNCTUATION))
    )


class UrlScrubber:
    """Drops the query (and fragment) parameters of a URL whose value holds an email address
    or a run of 7+ digits, unless the parameter's name matches one of `kept` (glob patterns,
    case-insensitive), and any beyond the first `MAX_PARAMETERS`. Kept parameters stay byte
    for byte as they came; a URL with nothing to remove is returned unchanged."""

    def __init__(self, kept: Iterable[str] = DEFAULT_KEPT_PARAMETERS) -> None:
        patterns = [fnmatch.translate(pattern.lower()) for pattern in kept]
        self._kept = re.compile("|".join(patterns)) if patterns else None
        self._memo: dict[str, str] = {}

    def scrub(self, url: str) -> str:
        clean = self._memo.get(url)
        if clean is None:
            clean = self._scrub(url)
            if len(url) <= MEMO_MAX_URL_CHARS:
                if len(self._memo) >= MEMO_SIZE:
                    self._memo.clear()
                self._memo[url] = clean
        return clean

    def _scrub(self, url: str) -> str:
        if "=" not in url:
            return url
        rest, hash_mark, fragment = url.partition("#")
        base, question_mark, query = rest.partition("?")
        clean_query = self._parameters(query)
        clean_fragment = self._parameters(fragment)
        if clean_query == query and clean_fragment == fragment:
            return url
        return (
            base
            + (question_mark + clean_query if clean_query else "")
            + (hash_mark + clean_fragment if hash_mark else "")
        )

    def _parameters(self, text: str) -> str:
        kept = []
        for part in text.split("&", MAX_PARAMETERS)[:MAX_PARAMETERS]:
            name, _, value = part.partition("=")
            if value and holds_personal_data(_decoded(value)) and not self._is_kept(name):
                continue
            kept.append(part)
        return "&".join(kept)

    def _is_kept(self, name: str) -> bool:
        return self._kept is not None and self._kept.fullmatch(_decoded(name).lower()) is not None


def _decoded(text: str) -> str:
    # unquote_plus costs microseconds even when there is nothing to decode.
    return unquote_plus(text) if "%" in text or "+" in text else text
