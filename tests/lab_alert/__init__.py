"""The lab-alert pipeline: rules, workflow (time-skipping), HL7 bridge, end to end."""
