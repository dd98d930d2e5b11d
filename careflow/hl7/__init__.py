"""HL7 v2 over MLLP: framing, ORU^R01 parsing with explicit checks, ACK building, the listener."""
