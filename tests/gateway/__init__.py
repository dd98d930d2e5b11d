"""The AI gateway: routing, budgets, breaker, providers, structured task outputs."""
