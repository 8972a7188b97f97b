"""What every program that runs a shipped model shares: the service, the tokenizer, the codec CLI
and the benchmarks. No web framework and no torch.

- `runtime.model_runtime`: opening a model directory (manifest and sha256 checks, onnxruntime
  sessions on the requested provider, warm-up) -> a `ModelRuntime` that encodes and decodes;
- `runtime.prior_sampler`: the model's learned prior, when it ships one (sampling, prior streams);
- `runtime.images`: image files <-> pixels, with the limits checked from headers first;
- `runtime.tiling`, `runtime.memory_estimates`: large images in tiles, and what a piece of work
  will hold in memory, estimated before it is done;
- `runtime.host_limits`: the CPUs and memory this process may really use (cgroups);
- `runtime.errors`: the domain errors, with stable codes and no HTTP.
"""
