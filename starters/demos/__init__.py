"""`careflow demo ...`: each pipeline end to end against the running stack."""
