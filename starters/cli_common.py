"""What every `careflow` command does first: load settings (a bad one is a one-line error) and
route logging through careflow's PHI-safe JSON logger."""

from __future__ import annotations

from careflow.config import Settings, load_settings
from careflow.security.logging import configure_logging


def cli_settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings
