"""Kafka SASL_SSL and TLS-to-the-API tests of the real forwarder."""
