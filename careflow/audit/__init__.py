"""HIPAA audit trail: append-only, hash-chained `audit_events` (see trail.py)."""
