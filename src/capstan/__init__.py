"""Capstan: a control plane for cloud-native workloads, embedded or on Kubernetes."""

__version__ = "0.1.0"
