"""Code every modelgate service shares: event models, bus, settings, logging, storage."""
