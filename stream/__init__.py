"""capi-stream: forwards conversion events from Kafka to the Pinterest Conversions API."""

__version__ = "0.1.0"
