"""Task queue names: shared by starters (where work is sent) and workers (what polls where)."""

# Orchestration of every pipeline plus light activities (database, FHIR, notifications).
MAIN = "careflow-main"
