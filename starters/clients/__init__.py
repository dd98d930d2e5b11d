"""What starts, steers and waits for workflows: shared by the CLI, the API, demos, benches and tests."""
