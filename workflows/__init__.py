"""One module per pipeline; deterministic; inputs and outputs are careflow.models types."""
