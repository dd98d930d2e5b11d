"""The sandbox EHR inside careflow's API: `app.include_router(api_fhir.router, prefix="/fhir/r4")`.

FHIR search URLs carry identifiers (MRNs) and other PHI in their query strings, so the access log
keeps the path of each request and drops its query string.
"""

from __future__ import annotations

import logging

from careflow.fhir.server import build_router


class DropQueryString(logging.Filter):
    """uvicorn.access records are `(client, method, path?query, http_version, status)`: keep the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


_access = logging.getLogger("uvicorn.access")
if not any(isinstance(f, DropQueryString) for f in _access.filters):
    _access.addFilter(DropQueryString())

router = build_router()
