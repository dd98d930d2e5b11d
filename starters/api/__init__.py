"""careflow's HTTP API (FastAPI): `app.py` assembles one router per area."""
