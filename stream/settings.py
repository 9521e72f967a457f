"""Configuration: a YAML file overridden by CAPI_STREAM_<SECTION>__<KEY> environment variables."""

from __future__ import annotations

import difflib
import ipaddress
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stream.errors import ConfigurationError

ActionSource = Literal["web", "app_android", "app_ios", "offline"]
ENV_PREFIX = "CAPI_STREAM_"
SECRET_PROPERTY_MARKERS = ("password", "secret", "token", "key.pem", "jaas", "oauthbearer")
MASK = "***"
AdAccountId = Annotated[str, StringConstraints(pattern=r"^\d{1,18}$")]
# CAPI_STREAM_* variables that are not settings: read by the development scripts in scripts/.
NOT_SETTINGS = frozenset({"CAPI_STREAM_CACHE"})
# librdkafka properties that switch TLS certificate checks off, and the values that do it.
_VERIFICATION_OFF = {
    "enable.ssl.certificate.verification": "false",
    "ssl.endpoint.identification.algorithm": "none",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptOutRule(Section):
    """Sets a privacy flag on events whose message field matches one of the values."""

    field: str = Field(description="Dotted path into the raw message, e.g. context.traits.state")
    values: list[str | bool | int] = Field(
        default_factory=list,
        description="Values that trigger the rule (compared as case-insensitive strings)",
    )


class LdpRule(OptOutRule):
    """Sets `custom_data.opt_out_type=LDP` on matching events, and the state of residence.

    Pinterest asks for the user's state with the LDP flag: `state` and `country` are added
    (hashed like any user_data value) to matching events that lack `st` / `country`.
    """

    state: str | None = Field(
        default=None,
        min_length=1,
        description="user_data.st added to matching events that lack one, e.g. ca",
    )
    country: str | None = Field(
        default=None,
        min_length=1,
        description="user_data.country added to matching events that lack one, e.g. us",
    )


class SourceSettings(Section):
    """One Kafka topic and how its messages become Pinterest events."""

    topic: str = Field(min_length=1, description="Kafka topic to consume")
    name: str | None = Field(default=None, description="Name for `transform --source`; the topic")
    format: Literal["segment", "pinterest"] = Field(
        default="segment", description="Message format: segment or pinterest"
    )
    ad_account_id: str | None = Field(
        default=None,
        pattern=r"^\d{1,18}$",
        description="Ad account of this source; defaults to pinterest.ad_account_id",
    )
    action_source: ActionSource = Field(
        default="web", description="action_source when the message does not say"
    )
    unknown_events: Literal["custom", "skip"] = Field(
        default="custom", description="What to do with Segment track events not in the table"
    )
    event_names: dict[str, str] = Field(
        default_factory=dict,
        description="Overrides of the Segment event-name table: event → Pinterest name or 'skip'",
    )
    ldp: LdpRule | list[LdpRule] | None = Field(
        default=None,
        description="Rule (or rules, e.g. one per state) setting custom_data.opt_out_type=LDP",
    )
    opt_out: OptOutRule | None = Field(default=None, description="Rule setting opt_out=true")
    event_id_path: list[str] = Field(
        default_factory=list,
        description="Dotted paths tried in order for event_id, before the format's own",
    )

    enrich: Literal["identity"] | None = Field(
        default=None,
        description="identity: add the hashed identifiers a user gave earlier (identify calls, "
        "earlier events) to that user's later events; Segment-shaped sources keyed by user",
    )
    url_parameters_kept: list[str] = Field(
        default_factory=lambda: ["epik", "utm_*"],
        description="event_source_url query parameters kept even when their value looks like an "
        "email or a phone number (glob patterns, case-insensitive); others such are removed",
    )

    @field_validator("event_id_path")
    @classmethod
    def _dotted_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not all(path.split(".")):
                raise ValueError(f"{path!r} is not a dotted path such as properties.order_id")
        return paths

    @property
    def source_name(self) -> str:
        return self.name or self.topic


class KafkaSettings(Section):
    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers")
    group_id: str = Field(default="capi-stream", min_length=1, description="Consumer group id")
    dead_letter_topic: str = Field(
        default="capi-stream-dlq", min_length=1, description="Dead-letter topic"
    )
    topics: str | None = Field(
        default=None,
        description="Shorthand: comma-separated topics, each a `segment` source (replaces sources)",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka security.protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="librdkafka sasl.mechanism"
    )
    sasl_username: str | None = Field(default=None, description="SASL username")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password")
    sasl_password_file: Path | None = Field(
        default=None, description="File holding the SASL password (Kubernetes Secret mount)"
    )
    ssl_ca_location: Path | None = Field(default=None, description="CA bundle for the brokers")
    properties: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties for consumer and producer"
    )
    max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Messages larger than this are dead-lettered (invalid_event) without parsing",
    )

    def client_config(self) -> dict[str, str]:
        """librdkafka properties shared by the consumer and the dead-letter producer."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
        password = self.sasl_password_value()
        if password is not None:
            config["sasl.password"] = password
        if self.ssl_ca_location is not None:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        config.update(self.properties)
        return config

    def password_file_reader(self) -> Callable[[], str | None] | None:
        """Reads `sasl_password_file` again (a rotated Secret); None when there is no file."""
        return self.sasl_password_value if self.sasl_password_file is not None else None

    def sasl_password_value(self) -> str | None:
        if self.sasl_password_file is not None:
            return read_secret_file(self.sasl_password_file, "kafka.sasl_password_file")
        return self.sasl_password.get_secret_value() if self.sasl_password else None


class QualitySettings(Section):
    """Pinterest's Event Quality Score (GET /v5/ad_accounts/{id}/conversion_eqs), polled for
    every configured ad account and exported as metrics; off unless enabled."""

    enabled: bool = Field(
        default=False, description="Poll the Event Quality Score and export it on /metrics"
    )
    poll_interval_s: float = Field(
        default=1800.0, ge=1.0, description="Seconds between two polls of every ad account"
    )
    request_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one conversion_eqs request"
    )
    access_token: SecretStr | None = Field(
        default=None,
        description="Token with the ads:read scope; defaults to pinterest.access_token",
    )
    access_token_file: Path | None = Field(
        default=None, description="File holding the ads:read token (Kubernetes Secret mount)"
    )

    def token_value(self) -> str | None:
        """The ads:read token if one is configured, else None (callers fall back)."""
        if self.access_token_file is not None:
            return read_secret_file(self.access_token_file, "pinterest.quality.access_token_file")
        return self.access_token.get_secret_value() if self.access_token else None

    def readable_token(self) -> str | None:
        """`token_value()`, or None when its file cannot be read: an optional feature's secret
        must not stop the forwarder (the poller counts the problem as `no_token`)."""
        try:
            return self.token_value()
        except ConfigurationError:
            return None


class PinterestSettings(Section):
    api_base_url: str = Field(
        default="https://api.pinterest.com",
        description="API base URL; /v5/ad_accounts/{id}/events is appended",
    )
    ad_account_id: str | None = Field(
        default=None, pattern=r"^\d{1,18}$", description="Default ad account for every source"
    )
    allowed_ad_accounts: list[AdAccountId] = Field(
        default_factory=list,
        description="Further ad accounts a pinterest-format message may name in ad_account_id",
    )
    access_token: SecretStr | None = Field(default=None, description="Conversions access token")
    access_token_file: Path | None = Field(
        default=None, description="File holding the access token (Kubernetes Secret mount)"
    )
    test_mode: bool = Field(default=False, description="Send with ?test=true (nothing recorded)")
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle trusted for the API in addition to the system CAs "
        "(a private CA, a TLS-inspecting proxy)",
    )
    ca_file_only: bool = Field(
        default=False,
        description="Trust only ca_file for the API, not the system CAs",
    )
    requests_per_minute: int = Field(
        default=5000, gt=0, description="Request budget per ad account per minute"
    )
    quality: QualitySettings = Field(default_factory=QualitySettings)

    @field_validator("api_base_url")
    @classmethod
    def _https_unless_loopback(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("http:// is refused unless the host is loopback; use https://")
        return url.rstrip("/")

    @field_validator("ca_file_only")
    @classmethod
    def _only_with_a_file(cls, only: bool, info: ValidationInfo) -> bool:
        if only and info.data.get("ca_file") is None:
            raise ValueError("needs pinterest.ca_file: without it nothing would be trusted")
        return only

    def token_value(self) -> str | None:
        if self.access_token_file is not None:
            return read_secret_file(self.access_token_file, "pinterest.access_token_file")
        return self.access_token.get_secret_value() if self.access_token else None


class BatchingSettings(Section):
    max_events: int = Field(default=1000, ge=1, le=1000, description="Events per request")
    max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Encoded request size limit in bytes"
    )
    linger_ms: int = Field(default=500, ge=0, description="Longest wait to fill a batch")


class SendingSettings(Section):
    max_concurrency: int = Field(default=32, ge=1, description="In-flight requests per account")
    initial_concurrency: int = Field(default=4, ge=1, description="Starting concurrency limit")
    request_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one request")
    retry_budget_s: float | None = Field(
        default=None,
        gt=0,
        description="Optional cap on the time an event may spend failing transiently (429, "
        "5xx, timeouts); unset, it retries until the event is too old for Pinterest",
    )
    backoff_initial_s: float = Field(default=0.5, gt=0, description="First retry backoff cap")
    backoff_max_s: float = Field(default=60.0, gt=0, description="Largest retry backoff")
    setup_error_probe_s: float = Field(
        default=30.0, gt=0, description="Probe interval while an account has a setup error"
    )


class BufferSettings(Section):
    max_events: int = Field(default=50_000, ge=1, description="Events held in memory")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Bytes held in memory")
    resume_ratio: float = Field(
        default=0.5, gt=0, lt=1, description="Resume consuming below this share of the caps"
    )


class ShutdownSettings(Section):
    grace_period_s: float = Field(default=25.0, gt=0, description="Drain time on SIGTERM")


class MetricsSettings(Section):
    host: str = Field(default="0.0.0.0", description="Bind address of /metrics, /healthz, /readyz")  # noqa: S104 - pods are scraped from outside
    port: int = Field(default=9108, ge=0, le=65535, description="Port of the metrics server")
    resilience_window_s: float = Field(
        default=3600.0, gt=0, description="Sliding window of the resilience ratios"
    )


class IdentitySettings(Section):
    """Where identity enrichment keeps its state (used only by sources with `enrich: identity`)."""

    state_dir: Path = Field(
        default=Path("capi-stream-state"),
        description="Directory of the per-partition identity stores (local disk; restored from "
        "the changelog topic when empty)",
    )
    ttl_days: float = Field(
        default=30.0, gt=0, description="Identifiers are forgotten this long after last seen"
    )
    changelog_replication_factor: int = Field(
        default=-1, ge=-1, description="Replication of the changelog topics (-1: broker default)"
    )

    def changelog_topic(self, group_id: str, source_topic: str) -> str:
        """The compacted topic backing one source topic's stores (one partition per partition)."""
        return f"{group_id}-{source_topic}-identity-changelog"


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    format: Literal["plain", "json"] = Field(default="plain")


def _default_sources() -> list[SourceSettings]:
    return [SourceSettings(topic="clickstream")]


class Settings(BaseSettings):
    """Everything `capi-stream` reads from its configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    pinterest: PinterestSettings = Field(default_factory=PinterestSettings)
    sources: list[SourceSettings] = Field(default_factory=_default_sources, min_length=1)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    sending: SendingSettings = Field(default_factory=SendingSettings)
    buffer: BufferSettings = Field(default_factory=BufferSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Settings:
        if self.kafka.topics:
            topics = [t.strip() for t in self.kafka.topics.split(",") if t.strip()]
            object.__setattr__(self, "sources", [SourceSettings(topic=t) for t in topics])
        names = [s.source_name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError("sources: each source needs a distinct topic or name")
        if self.kafka.dead_letter_topic in {s.topic for s in self.sources}:
            raise ValueError("kafka.dead_letter_topic must not be one of the source topics")
        for source in self.sources:
            if source.enrich == "identity" and source.format != "segment":
                raise ValueError(
                    f"sources.{source.source_name}.enrich: identity needs format segment (its "
                    "identity keys are userId and anonymousId)"
                )
        if self.sending.initial_concurrency > self.sending.max_concurrency:
            raise ValueError("sending.initial_concurrency must not exceed sending.max_concurrency")
        return self

    def source(self, name: str) -> SourceSettings:
        for source in self.sources:
            if source.source_name == name:
                return source
        raise ConfigurationError("--source", f"no source named {name!r}")

    def ad_account_for(self, source: SourceSettings) -> str | None:
        return source.ad_account_id or self.pinterest.ad_account_id

    def enriched_topics(self) -> list[str]:
        """The source topics whose messages go through identity enrichment."""
        return sorted({s.topic for s in self.sources if s.enrich == "identity"})

    def configured_ad_accounts(self) -> frozenset[str]:
        """Every ad account this process may send to: the default, the sources' own and the
        allow-list. A message naming another one is dead-lettered, so per-account state and
        metric labels stay bounded by the configuration."""
        accounts = {self.pinterest.ad_account_id, *(s.ad_account_id for s in self.sources)}
        accounts.update(self.pinterest.allowed_ad_accounts)
        return frozenset(account for account in accounts if account)

    def security_warnings(self) -> list[str]:
        """Settings that are valid but weaken transport security; said at start-up, not refused."""
        warnings = []
        if self.kafka.security_protocol == "SASL_PLAINTEXT":
            warnings.append(
                "kafka.security_protocol is SASL_PLAINTEXT: SASL credentials and every message "
                "cross the network unencrypted; use SASL_SSL"
            )
        for key, off in _VERIFICATION_OFF.items():
            if self.kafka.properties.get(key, "").strip().lower() == off:
                warnings.append(
                    f"kafka.properties.{key}={off}: broker TLS certificates are not verified"
                )
        return warnings

    def require_runnable(self) -> None:
        """Checks what `run` needs beyond well-formed values: credentials, accounts and the
        files they name; raises one error listing every problem."""
        problems: list[tuple[str, str]] = []
        try:
            if self.pinterest.token_value() is None:
                problems.append(
                    ("pinterest.access_token", "an access token (or access_token_file) is required")
                )
        except ConfigurationError as exc:
            problems += exc.problems
        try:
            self.kafka.sasl_password_value()
        except ConfigurationError as exc:
            problems += exc.problems
        ca_file = self.pinterest.ca_file
        if ca_file is not None and not ca_file.is_file():
            problems.append(("pinterest.ca_file", f"{ca_file} is not a readable file"))
        problems += [
            ("pinterest.ad_account_id", f"source {source.source_name!r} has no ad account")
            for source in self.sources
            if self.ad_account_for(source) is None
        ]
        if problems:
            raise ConfigurationError(*problems[0], *problems[1:])

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, for the log redaction filter."""
        secrets = [self.pinterest.token_value(), self.kafka.sasl_password_value()]
        secrets.append(self.pinterest.quality.readable_token())
        secrets.append(urlsplit(self.pinterest.api_base_url).password)
        secrets += [
            value
            for key, value in self.kafka.properties.items()
            if any(m in key.lower() for m in SECRET_PROPERTY_MARKERS)
        ]
        return [secret for secret in secrets if secret]

    def masked(self) -> dict[str, Any]:
        """The effective configuration with every secret replaced by '***'."""
        data = self.model_dump(mode="json")
        for section, key in (("pinterest", "access_token"), ("kafka", "sasl_password")):
            if data[section][key] is not None:
                data[section][key] = MASK
        data["pinterest"]["api_base_url"] = mask_url_password(self.pinterest.api_base_url)
        data["kafka"]["properties"] = {
            key: MASK if any(m in key.lower() for m in SECRET_PROPERTY_MARKERS) else value
            for key, value in data["kafka"]["properties"].items()
        }
        return data


def mask_url_password(url: str) -> str:
    """`url` with the password of its user-info part (https://user:secret@host) masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


def read_secret_file(path: Path, key: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(key, f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ConfigurationError(key, f"{path} is empty")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Reads the YAML file (if any), then the environment; the error names every offending key
    and every unknown CAPI_STREAM_* variable."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text())
        except OSError as exc:
            raise ConfigurationError(
                "--config", f"cannot read {config_file}: {exc.strerror}"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(
                "--config", f"{config_file} is not valid YAML: {_yaml_problem(exc)}"
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigurationError("--config", f"{config_file} must hold a mapping")
        data = loaded or {}
    problems = unknown_variables(os.environ if environ is None else environ)
    saved_environ = None
    if environ is not None:
        saved_environ = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
    finally:
        if saved_environ is not None:
            os.environ.clear()
            os.environ.update(saved_environ)
    if problems:
        raise ConfigurationError(*problems[0], *problems[1:])
    return settings


def variable_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """The environment variables the settings model reads: exact names, and the prefixes of
    mapping-valued keys (`CAPI_STREAM_KAFKA__PROPERTIES__…`) that take any name below.
    Nested sections (`CAPI_STREAM_PINTEREST__QUALITY__ENABLED`) are followed all the way down."""
    names: set[str] = set()
    prefixes: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for key, field in model.model_fields.items():
            name = f"{prefix}{key.upper()}"
            names.add(name)
            annotation = field.annotation
            if typing.get_origin(annotation) is dict:
                prefixes.append(name + "__")
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, name + "__")

    walk(Settings, ENV_PREFIX)
    return frozenset(names), tuple(prefixes)


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """A problem for each CAPI_STREAM_* variable no setting reads, naming the closest valid one:
    a typo would otherwise be ignored without a word."""
    names, prefixes = variable_names()
    # Compared without the shared prefix, which would make every name look alike.
    stems = {valid.removeprefix(ENV_PREFIX): valid for valid in names}
    problems = []
    for variable in sorted(environ):
        name = variable.upper()
        if (
            not name.startswith(ENV_PREFIX)
            or name in names
            or name in NOT_SETTINGS
            or name.startswith(prefixes)
        ):
            continue
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), stems, n=1)
        hint = (
            f"did you mean {stems[close[0]]}?"
            if close
            else f"settings are read from {ENV_PREFIX}<SECTION>__<KEY> (docs/configuration.md)"
        )
        problems.append((variable, f"unknown environment variable; {hint}"))
    return problems


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's own text quotes the offending line, which may hold a token: position only.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or 'syntax error'} (line {mark.line + 1}, column {mark.column + 1})"
    return "syntax error"


def _describe(error: ErrorDetails) -> tuple[str, str]:
    # Built from loc and msg only: pydantic's own text repeats the input, which may be a secret.
    key = ".".join(str(part) for part in error["loc"]) or "config"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "string_type" and isinstance(error.get("input"), int | float):
        message = _unquoted_scalar(key, error["input"])
    return key, message


def _unquoted_scalar(key: str, value: float) -> str:
    """YAML reads an unquoted 549755885175 as a number and `yes` as a boolean: say to quote it.
    Converting the number back is no fix: YAML 1.1 reads 0755 as octal and 1e3 as a float, so
    the digits could change silently."""
    kind = "a boolean" if isinstance(value, bool) else "a number"
    leaf = key.rsplit(".", 1)[-1]
    if "ad_account" not in key:
        return f'{kind}, not a string: quote the value in YAML ({leaf}: "...")'
    # An ad account id is no secret: showing it makes the fix copyable.
    digits = str(value) if type(value) is int else "549755885175"
    if len(digits) > 18:
        return f"{kind} of {len(digits)} digits: an ad account id is a string of 1 to 18 digits"
    if leaf.isdigit():  # an item of allowed_ad_accounts
        return f'{kind}, not a string: quote each ad account id in YAML (["{digits}"])'
    return f'{kind}, not a string: quote the ad account id as written in YAML ({leaf}: "{digits}")'
