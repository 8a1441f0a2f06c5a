"""The kube-style HTTP API, its authentication and the embedded server entry point."""
