"""The prior-auth pipeline: domain, workflow (time-skipping), dev-server end to end, demo, order API."""
