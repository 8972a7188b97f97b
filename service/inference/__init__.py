"""Running models: onnxruntime sessions, the model registry and readiness, micro-batching, admission, CPU budget."""
