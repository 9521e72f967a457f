"""Input formats: each maps a decoded message to a Pinterest event."""
