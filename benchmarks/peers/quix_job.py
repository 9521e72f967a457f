"""capi-stream's job written in Quix Streams, for make bench's side by side (runs in its own venv).

The same topic, the same mapping (capi-stream's Transformer, so only the framework differs), the
same batches of at most 1,000 events per request to the same sandbox, offsets committed after the
sink has written (Quix's checkpoint: flush sinks, then commit). What it leaves out makes it
cheaper, not dearer: invalid messages are dropped instead of dead-lettered, a rejected batch stops
the job instead of being classified per event, and there are no metrics.

    <quix venv>/bin/python benchmarks/peers/quix_job.py --bootstrap HOST:PORT --topic T \
        --group G --url SANDBOX_URL --token TOKEN --ad-account ID --state-dir DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stream.models import PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer

MAX_EVENTS = 1000
RETRY_AFTER_S = 1.0


class PinterestSink(BatchingSink):
    """Posts each checkpoint's events of a partition in requests of at most MAX_EVENTS."""

    def __init__(self, url: str, token: str, ad_account_id: str) -> None:
        super().__init__()
        self._client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=30.0,
        )
        self._path = f"/v5/ad_accounts/{ad_account_id}/events"

    def write(self, batch: SinkBatch) -> None:
        for chunk in batch.iter_chunks(MAX_EVENTS):
            body = b'{"data":[' + b",".join(item.value for item in chunk) + b"]}"
            try:
                response = self._client.post(self._path, content=body)
            except httpx.TransportError as exc:
                raise SinkBackpressureError(retry_after=RETRY_AFTER_S) from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise SinkBackpressureError(retry_after=RETRY_AFTER_S)
            response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("bootstrap", "topic", "group", "url", "token", "ad-account", "state-dir"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    settings = Settings()
    source = settings.sources[0]
    transform = Transformer(settings).transform

    def to_body(value: bytes, key: Any, timestamp: int, headers: Any) -> bytes | None:
        result = transform(source, value, timestamp)
        return result.body if type(result) is PinterestEvent else None

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        use_changelog_topics=False,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="bytes", key_deserializer="bytes")
    frame = app.dataframe(topic).apply(to_body, metadata=True).filter(lambda body: body is not None)
    frame.sink(PinterestSink(args.url, args.token, args.ad_account))
    app.run()


if __name__ == "__main__":
    main()
