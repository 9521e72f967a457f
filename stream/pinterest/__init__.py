"""The Pinterest Conversions API: request client and response classification."""
