"""The sandbox EHR inside careflow's API: `app.include_router(api_fhir.router, prefix="/fhir/r4")`.

Its search URLs carry identifiers (MRNs) in their query strings: the access log keeps paths only
(careflow.security.logging.SafeAccessLog).
"""

from __future__ import annotations

from careflow.fhir.server import build_router

router = build_router()
