"""Lab results: normalised results and the deterministic, baseline-aware urgency rules."""
