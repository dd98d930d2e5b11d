"""The platform: embedded stack, workers, codec, replay, CLI and API conventions."""
