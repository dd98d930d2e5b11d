"""Payer side of prior authorization: Da Vinci PAS Claim Bundles (pas.py), the client that submits
them (client.py), and careflow's sandbox payer that answers them (sandbox.py)."""
