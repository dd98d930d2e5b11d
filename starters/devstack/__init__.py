"""The embedded stack: `careflow dev up | status | down`."""
