"""Typed resource models, validation and the kind registry (the bottom layer)."""
