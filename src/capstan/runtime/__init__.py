"""The local node runtime: runs containers as OS processes (embedded mode only)."""
