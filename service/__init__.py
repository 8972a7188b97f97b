"""The VQ-VAE codec service: FastAPI over onnxruntime. Layers: api/ (HTTP), inference/, inputs/."""
