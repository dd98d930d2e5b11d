# careflow: `make run` brings up the embedded stack and runs the main job; `make test` runs the suite.
# Both bootstrap .venv on first use (and again whenever pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run demo-lab-alert demo-risk demo-ambient demo-model demo-dr test lint unit down status bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "careflow needs Python 3.11 (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first, pinned, so nothing later resolves torch to a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# resemblyzer without its dependencies (pyproject.toml lists them; see the comment there).
	$(BIN)/pip install --quiet --no-deps resemblyzer==0.1.4
	touch $(STAMP)

# The main job, end to end: the stack, 20 synthetic patients in the sandbox EHR, the starter
# knowledge base, then a morning batch of prior-authorization orders drafted and reviewed (workflow
# ids, Web UI links, how to approve).  The lab-alert demo: `make demo-lab-alert`.
run: $(STAMP)
	$(BIN)/careflow dev up
	$(BIN)/careflow seed ehr --patients 20 --seed 7
	$(BIN)/careflow demo prior-auth --seed 7 --patients 20

demo-lab-alert: $(STAMP)
	$(BIN)/careflow dev up
	$(BIN)/careflow seed ehr --patients 20 --seed 7
	$(BIN)/careflow demo lab-alert --seed 7 --patients 20

# Readmission risk: trains a champion and a shadow challenger if there are none, discharges every
# finished stay in the EHR, prints the worklist, the subgroup table and the nightly Schedule.
demo-risk: $(STAMP)
	$(BIN)/careflow dev up
	$(BIN)/careflow seed ehr --patients 20 --seed 7
	$(BIN)/careflow demo readmission

# Ambient notes: three clinic visits (two as badge audio spoken by espeak-ng, one as a transcript) to
# SOAP notes in the EHR; one signed with an edit and coded.
demo-ambient: $(STAMP)
	$(BIN)/careflow dev up
	$(BIN)/careflow seed ehr --patients 20 --seed 7
	$(BIN)/careflow demo ambient

# The note model's promotion saga on CPU: fine-tune (LoRA + DP-SGD), evaluate, blind review, shadow,
# canary, champion; then a weak candidate caught by the golden gate in canary and rolled back.
# Disaster recovery: the hot standby, a prior-auth batch, kill -9 of the primary, the failover finishing it.
demo-dr: $(STAMP)
	$(BIN)/careflow dev up --standby
	$(BIN)/careflow seed ehr --patients 20 --seed 7
	$(BIN)/careflow demo dr

demo-model: $(STAMP)
	$(BIN)/careflow dev up
	$(BIN)/careflow demo model-promotion

down: $(STAMP)
	$(BIN)/careflow dev down

status: $(STAMP)
	$(BIN)/careflow dev status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# The fast tier: every test that needs no server (no Temporal, no Postgres), about a minute.
unit: $(STAMP)
	$(BIN)/pytest -m "not stack" -q

# Needs the stack (started if it is not running; idempotent).  The bench runs workers of its own on
# queues of its own, so the stack's workers stay (idle) and the stack is left as it was.
bench: $(STAMP)
	$(BIN)/careflow dev up
	$(BIN)/python -m bench.orchestration

clean: $(STAMP)
	$(BIN)/careflow dev down --purge
