"""Commands of the `careflow` CLI (typer): one module per area, `main.py` assembles them."""
