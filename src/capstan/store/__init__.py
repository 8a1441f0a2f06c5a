"""Stores: one interface with Kubernetes API semantics, two engines (SQLite, Kubernetes)."""
