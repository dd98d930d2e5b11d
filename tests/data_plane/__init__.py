"""The clinical data plane: FHIR client and sandbox, HL7, audit trail, synthetic EHR, payer, notifications."""
