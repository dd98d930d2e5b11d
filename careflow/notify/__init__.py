"""Notifications: a durable record per notification and an optional webhook, deduplicated by key."""
