"""Prior authorization's domain logic as pure functions (no Temporal, no I/O): record summaries
(summaries.py), payer policy criteria (criteria.py), the letter and the evidence given to the drafter
(letters.py), the FHIR resources the pipeline writes (resources.py), edit and timing metrics
(metrics.py), review rules and audit events (review.py), review deadlines (deadlines.py), what the
reviewer is told is missing (missing.py) and the run's memo (visibility.py).  store.py holds the
pipeline's one table.  Models live in careflow/models/prior_auth.py."""
