"""Generated gRPC code for the KEDA external scaler protocol (see hack/gen-grpc)."""
