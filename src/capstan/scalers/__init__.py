"""Scalers: one module per KEDA trigger type, found through a registry keyed by type name."""
