"""A local emulator of Pinterest's Conversions API with fault injection (`capi-stream sandbox`)."""
