"""Databases owned by the coordinator: the jobs DB (and, later, the universe chunk index)."""
