"""Thin @activity.defn adapters over careflow/*, grouped by the system they touch."""
