"""PHI-safe structured logging (structlog, JSON).

Logs carry ids and metadata only.  `drop_phi` removes the values of known PHI fields wherever they
appear in an event (nested too), and payload bodies are never logged.  When a log line is written
inside a Temporal activity or workflow, the workflow id, run id, activity type and attempt are added
so a line can be traced to its execution in the Web UI.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# Field names whose values are PHI (or may hold it) and never reach a log sink.
PHI_FIELDS = frozenset(
    {
        "name",
        "given",
        "family",
        "patient_name",
        "birthdate",
        "birth_date",
        "dob",
        "mrn",
        "ssn",
        "address",
        "line",
        "city",
        "postalcode",
        "postal_code",
        "zip",
        "phone",
        "telecom",
        "email",
        "text",
        "note",
        "notes",
        "narrative",
        "transcript",
        "content",
        "payload",
        "body",
        "data",
        "input",
        "result",
        "args",
        "details",
        "comment",
        "comments",
        "value",
    }
)
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: (REDACTED if str(k).lower() in PHI_FIELDS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def drop_phi(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key == "event":
            continue
        if key.lower() in PHI_FIELDS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def add_temporal_context(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    from temporalio import activity, workflow

    if activity.in_activity():
        a = activity.info()
        event_dict.setdefault("workflow_id", a.workflow_id)
        event_dict.setdefault("run_id", a.workflow_run_id)
        event_dict.setdefault("activity_type", a.activity_type)
        event_dict.setdefault("attempt", a.attempt)
    else:
        try:
            w = workflow.info()
        except Exception:  # not inside a workflow
            return event_dict
        event_dict.setdefault("workflow_id", w.workflow_id)
        event_dict.setdefault("run_id", w.run_id)
        event_dict.setdefault("workflow_type", w.workflow_type)
        event_dict.setdefault("attempt", w.attempt)
    return event_dict


def _drop_temporal_extras(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # The SDK's logger adapters attach whole info dicts; keep only the ids we want.
    for key in ("temporal_workflow", "temporal_activity"):
        info = event_dict.pop(key, None)
        if isinstance(info, Mapping):
            for src, dst in (
                ("workflow_id", "workflow_id"),
                ("run_id", "run_id"),
                ("workflow_run_id", "run_id"),
                ("activity_type", "activity_type"),
                ("attempt", "attempt"),
                ("workflow_type", "workflow_type"),
            ):
                if src in info:
                    event_dict.setdefault(dst, info[src])
    return event_dict


_CODEC_TOKEN = re.compile(r"(/codec/t/)[^/?]+")


class SafeAccessLog(logging.Filter):
    """uvicorn.access records are `(client, method, path?query, http_version, status)`.

    Query strings are dropped (FHIR searches carry MRNs and other PHI) and the codec endpoint's
    path token is redacted (it is a credential)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = _CODEC_TOKEN.sub(r"\1[redacted]", args[2].split("?", 1)[0])
            record.args = (args[0], args[1], path, args[3], args[4])
        return True


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _drop_temporal_extras,
    add_temporal_context,
    drop_phi,
]


class _CurrentStderr:
    """`sys.stderr` as it is when a line is written, not when logging was configured: whoever swaps
    it (a test's capture, a tool redirecting output) and closes the old one loses no log line."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Route structlog and stdlib logging (the Temporal SDK's too) through one JSON renderer, on
    `stream` or else the process's stderr."""
    stream = stream or _CurrentStderr()
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *SHARED_PROCESSORS],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, SafeAccessLog) for f in access.filters):
        access.addFilter(SafeAccessLog())
    # Request lines of HTTP clients carry URLs (FHIR queries can hold identifiers): warnings only.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
