"""Pure autoscaling decisions: the Kubernetes HPA algorithm, KEDA's ScaledObject and ScaledJob logic."""
