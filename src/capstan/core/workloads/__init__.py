"""Pure decisions of the embedded workload controllers: Deployment, Job and garbage collection."""
