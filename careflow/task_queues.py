"""Task queue names: shared by starters (where work is sent) and workers (what polls where)."""

# Orchestration of every pipeline plus light activities (database, FHIR, notifications).
MAIN = "careflow-main"

# Speech to text and diarization for ambient notes: heavy, scaled apart (GPU workers in production).
STT = "careflow-stt"
