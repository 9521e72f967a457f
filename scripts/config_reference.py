"""Writes docs/configuration.md, the configuration reference, from the settings model."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stream.settings import ENV_PREFIX, Settings, SourceSettings
from stream.source import DEFAULT_CONSUMER_CONFIG

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
HEADER = """\
# Configuration reference

Generated from `stream/settings.py` by `scripts/config_reference.py`; a test keeps it current.

capi-stream reads a YAML file (`--config FILE`, examples in `config/`) and then the environment:
every key can be overridden by `CAPI_STREAM_<SECTION>__<KEY>` (nested keys joined with `__`;
lists and mappings as JSON). Secrets: prefer `pinterest.access_token_file` and
`kafka.sasl_password_file` (Kubernetes Secret mounts) over inline values. Invalid configuration
exits with status 2 and names every offending key; `capi-stream check-config` prints the
effective configuration with secrets masked, or every problem. A `CAPI_STREAM_*` variable that
no setting reads (a typo such as `CAPI_STREAM_KAFKA_BOOTSTRAP_SERVERS`, one underscore) is an
error naming the closest valid one. Quote ad account ids in YAML (`ad_account_id:
"549755885175"`): unquoted, YAML reads a number.

The API is reached through the proxy named by `HTTPS_PROXY` (`HTTP_PROXY` for an `http://`
loopback URL), unless `NO_PROXY` lists its host; user and password may be part of the proxy URL.
`pinterest.ca_file` adds a CA to the system's trusted CAs (for a private CA or a TLS-inspecting
proxy); with `pinterest.ca_file_only: true` the file's CAs are the only ones trusted.
"""


CONSUMER_DEFAULTS = """
The consumer's librdkafka defaults (`kafka.properties` overrides them): {settings}. Why, from
the measurements of issue 20 (benchmarks/ceiling.py, benchmarks/run.py end_to_end; 2 shared
cores, figures as ratios of one session):

- `fetch.queue.backoff.ms` 10: once its local queue is full, librdkafka waits this long before
  the next fetch (1 s by default). A bare consume + transform loop then idled 0.7-1.1 s at a
  time and reached ~57k msg/s where its CPU allowed ~89k; at 10 ms, ~94k with no empty polls.
- `queued.max.messages.kbytes` 16384 and `fetch.max.bytes` 16 MiB: the prefetch is memory the
  buffer account does not count, so it is bounded. 8 MiB and 4 MiB were measured against it
  in the same session (3 mixes x 2 rounds interleaved, 200,000 events): 16-33 MiB less peak
  RSS, but 5-8 % fewer events per forwarder CPU-second in every mix (more, smaller fetches).
  Under a tight memory limit, 8192 / 8388608 is the measured trade.
- `queued.min.messages` stays at librdkafka's 100,000 per partition: the byte bound above is
  reached first for any message over ~170 bytes, so it never decides.
"""


def _type_name(info: FieldInfo) -> str:
    text = str(info.annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("pydantic.types.", "").replace("stream.settings.", "")
    return text.replace("<class '", "").replace("'>", "").replace(" | ", " or ")


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            value = [v.model_dump(exclude_defaults=True) for v in value]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    return "`" + json.dumps(str(value) if isinstance(value, Path) else value) + "`"


def _rows(model: type[BaseModel], prefix: str, env: str | None) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{prefix}{name}.", f"{env}{name.upper()}__" if env else None)
            continue
        env_name = f"`{env}{name.upper()}`" if env else "—"
        description = (info.description or "").replace("|", "\\|")
        rows.append(
            f"| `{prefix}{name}` | {_type_name(info)} | {_default(info)} | {env_name} "
            f"| {description} |"
        )
        # An optional rule (or list of rules) such as `ldp`: its keys, without environment names.
        for rule in _models_in(annotation):
            rows += _rows(rule, f"{prefix}{name}.", None)
    return rows


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an optional or list annotation holds (`X | list[X] | None` → [X])."""
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for model in _models_in(arg) or [arg]:
            if isinstance(model, type) and issubclass(model, BaseModel) and model not in found:
                found.append(model)
    return found


def render() -> str:
    table_head = "| key | type | default | environment | meaning |\n|---|---|---|---|---|\n"
    sections = [HEADER]
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        sections.append(f"\n## `{name}`\n")
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows = _rows(annotation, f"{name}.", f"{ENV_PREFIX}{name.upper()}__")
        else:
            sections.append(
                f"A list of sources (default {_default(info)}), as JSON in "
                f"`{ENV_PREFIX}SOURCES`, or one `segment` source per topic in "
                f"`{ENV_PREFIX}KAFKA__TOPICS`. Each source:\n\n"
            )
            rows = _rows(SourceSettings, "sources[].", None)
        sections.append(table_head + "\n".join(rows) + "\n")
        if name == "kafka":
            settings = ", ".join(f"`{k}={v}`" for k, v in DEFAULT_CONSUMER_CONFIG.items())
            sections.append(CONSUMER_DEFAULTS.format(settings=settings))
    return "".join(sections)


def main() -> None:
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(render())
    sys.stdout.write(f"wrote {REFERENCE}\n")


if __name__ == "__main__":
    main()
