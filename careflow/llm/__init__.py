"""AI gateway: providers, tier routing, budgets, rate limits, circuit breaker (see types.py)."""
