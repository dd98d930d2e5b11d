"""Security: payload encryption, secrets for the embedded stack, PHI-safe logging.

The only part of `careflow/` allowed to import Temporal (for the payload codec and the client
that carries it).
"""
