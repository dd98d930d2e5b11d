"""Which Postgres is the primary now: the one place every careflow process reads it from (seed P20).

A failover writes the new primary's URL here (`switch`); the pool (careflow/db/pool.py) opens each new
connection to whatever this says, so workers and the API move to the promoted standby without a
restart: connections to the fenced primary break, the pool replaces them, the replacements go to the
new one.  Without a switch recorded, `CAREFLOW_DATABASE_URL` is the primary.

The record is a small JSON file under CAREFLOW_HOME/dr (written whole, then renamed into place).  In
production the same role is played by the name the database is reached by (a managed database's
endpoint, Patroni's HAProxy or a DNS record the failover updates), and this file stays absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from careflow.config import Settings


@dataclass(frozen=True)
class Endpoint:
    url: str
    since: str = ""  # when the switch was made (ISO 8601), empty: the configured URL
    reason: str = ""  # the incident, e.g. "dr-failover-2026-12-06-01"


def record_path(settings: Settings) -> Path:
    return settings.state_dir / "dr" / "active-database.json"


def active(settings: Settings) -> Endpoint:
    try:
        data = json.loads(record_path(settings).read_text())
        return Endpoint(str(data["url"]), str(data.get("since", "")), str(data.get("reason", "")))
    except FileNotFoundError:
        return Endpoint(settings.database_url)


def active_url(settings: Settings) -> str:
    return active(settings).url


def switch(settings: Settings, url: str, reason: str) -> Endpoint:
    """Make `url` the primary for every process from their next new connection on."""
    path = record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = Endpoint(url, datetime.now(UTC).isoformat(timespec="seconds"), reason)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(now.__dict__))
    os.replace(tmp, path)
    return now


def reset(settings: Settings) -> None:
    """Back to the configured URL (after a failback)."""
    record_path(settings).unlink(missing_ok=True)
