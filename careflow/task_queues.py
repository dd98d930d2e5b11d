"""Task queue names: shared by starters (where work is sent) and workers (what polls where)."""

# Orchestration of every pipeline plus light activities (database, FHIR, notifications).
MAIN = "careflow-main"

# Speech to text and diarization for ambient notes: heavy, scaled apart (GPU workers in production).
STT = "careflow-stt"

# Model work (fine-tuning, evaluation, golden queries): GPU workers in production, one job at a time.
GPU = "careflow-gpu"
