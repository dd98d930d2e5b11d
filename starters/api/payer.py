"""careflow's sandbox payer inside careflow's API: `app.include_router(api_payer.router, prefix="/payer/r4")`
(Da Vinci PAS `Claim/$submit`, `Claim/$inquire`, `ClaimResponse/{id}`; see careflow/payer/sandbox.py)."""

from __future__ import annotations

from careflow.payer.sandbox import build_router

router = build_router()
