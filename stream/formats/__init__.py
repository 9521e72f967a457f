"""Input formats: the registry from a source's `format` setting to the mapper that reads it.

Adding a format (Snowplow TSV, Avro, …) takes one module and one registry line:

1. `stream/formats/<name>.py` with a class implementing `stream.formats.base.Mapper`: a
   constructor taking `(source: SourceSettings, hasher: Hasher)` and a
   `map(value, kafka_timestamp_ms)` that decodes the bytes and returns the event (see `Mapped`)
   or a `Skipped`, or raises `InvalidMessage`. A JSON format decodes with
   `stream.decode.decode_json_object`; `stream.decode` also reads typed fields, naming them in
   errors.
2. A line in `FORMATS` below, from the format's name to that class.

The name is also a value of `SourceSettings.format`, the configuration contract (DESIGN §3), so
`check-config` rejects a format that does not exist; tests/unit/test_formats.py keeps the two
lists equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from stream.formats.base import Mapped, Mapper, MapperFactory
from stream.formats.pinterest import PinterestMapper
from stream.formats.segment import SegmentMapper

FORMATS: Final[Mapping[str, MapperFactory]] = {
    "segment": SegmentMapper,
    "pinterest": PinterestMapper,
}

__all__ = ["FORMATS", "Mapped", "Mapper", "MapperFactory"]
