"""Everything that starts or steers workflows: the `careflow` CLI, the HTTP API, event bridges, schedules."""
