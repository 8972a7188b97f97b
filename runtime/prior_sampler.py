"""A model's learned prior (prior.onnx), when its manifest lists one: sampling and prior-coded streams.

Loaded with the same checks as the other graphs (sha256 via verify_files, metadata equal to the
manifest's, the contract's tensor names) and warmed up by drawing one grid. The arithmetic on top
of the graph (walking the positions, sampling, range coding) is contract/prior_coding.py's, shared with
the exporter and the offline codec CLI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.guided_sampling import Sampling, sample
from contract.manifest import PRIOR_GRAPH, Manifest, PriorSpec, prior_io
from contract.prior_coding import CHUNK_GRIDS, PriorCoder, PriorShape, Step, session_step
from contract.streams import MissingCoder
from runtime import ModelLoadError, NoPrior, UnknownClass, UnsupportedSize

# One thread on the CPU provider, whatever the other graphs use: prior streams decode only where the
# probabilities come out to the same bits, so the service, the codec CLI and the exporter all run
# the prior alike (a stream made on a GPU replica would not decode on a CPU one). One thread is also
# the faster: a step of 64 grids took 3.7 ms on one thread, 6.2 ms on two (2 cores, busy).
PRIOR_THREADS = 1
PRIOR_PROVIDERS = ["CPUExecutionProvider"]


@dataclass
class PriorRuntime:
    spec: PriorSpec
    shape: PriorShape
    step: Step
    coder: PriorCoder

    def label_of(self, requested: int | str | None) -> int | None:
        """A request's class (its index or its name) -> label index; None: no class. UnknownClass (422)
        for a class the prior does not have."""
        if requested is None:
            return None
        names = self.spec.class_names
        if self.spec.classes == 0:
            raise UnknownClass("this model's prior is unconditional: sample without a class")
        if isinstance(requested, int) and 0 <= requested < self.spec.classes:
            return requested
        if isinstance(requested, str) and requested in names:
            return names.index(requested)
        known = ", ".join(names) if names else f"0 … {self.spec.classes - 1}"
        raise UnknownClass(f"no class {str(requested)[:64]!r} in this model's prior; classes: {known}")

    @property
    def defaults(self) -> Sampling:
        """How this prior samples when a request does not say: the settings chosen for it by
        measurement (model.json's prior.sampling), else plain conditional sampling at temperature 1."""
        chosen = self.spec.sampling
        return Sampling() if chosen is None else Sampling(chosen.temperature, chosen.guidance, chosen.top_k,
                                                          chosen.top_p)

    def walk_bytes(self, count: int, rule: Sampling, label: int | None) -> int:
        """What one walk of up to CHUNK_GRIDS of `count` grids holds (twice the sequences when guided)."""
        sequences = min(count, CHUNK_GRIDS) * (2 if rule.guides(label, self.shape) else 1)
        return self.shape.working_bytes(sequences)

    def sample(self, count: int, label: int | None, rule: Sampling, seed: int,
               stop: threading.Event | None = None) -> np.ndarray:
        """-> int64 (count, h, w) grids drawn from the prior; WalkStopped once `stop` is set."""
        return sample(self.step, self.shape, count, label, rule, seed, stop)

    def check_grid(self, h: int, w: int) -> None:
        """UnsupportedSize (422) for grids the prior does not model, before any work is done."""
        if (h, w) != self.shape.grid:
            raise UnsupportedSize(f"format=prior codes {self.shape.grid[0]}×{self.shape.grid[1]} grids only (images "
                                  f"of the model's native size), not {h}×{w}; use format=entropy for those")


def require_prior(manifest: Manifest, prior: PriorRuntime | None, for_streams: bool = False) -> PriorRuntime:
    """The model's prior; NoPrior (404) for /sample, MissingCoder (422 format_unavailable) for streams."""
    if prior is None:
        problem = f"model {manifest.name!r} ships no prior"
        if for_streams:
            raise MissingCoder(f"{problem} to code with; use format=entropy or packed")
        raise NoPrior(f"{problem} (export one with python -m export.prior)")
    return prior


def _check_graph(manifest: Manifest, spec: PriorSpec, session: ort.InferenceSession) -> None:
    found = session.get_modelmeta().custom_metadata_map
    expected = {**manifest.metadata(PRIOR_GRAPH), "vqvae.prior_classes": str(spec.classes)}
    wrong = sorted(k for k, v in expected.items() if found.get(k) != v)
    if wrong:
        raise ModelLoadError(f"{manifest.name}: {spec.path} metadata disagrees with model.json ({', '.join(wrong)})")
    inputs, outputs = prior_io(spec.layers)
    if [i.name for i in session.get_inputs()] != inputs or [o.name for o in session.get_outputs()] != outputs:
        raise ModelLoadError(f"{manifest.name}: {spec.path} does not have the prior's inputs and outputs "
                             f"({', '.join(inputs)} -> {', '.join(outputs)})")


def load_prior(manifest: Manifest, model_dir: Path, options: ort.SessionOptions) -> PriorRuntime | None:
    """The prior of a model whose files are verified already; None when the manifest lists none."""
    spec = manifest.prior
    if spec is None:
        return None
    try:
        session = ort.InferenceSession(str(model_dir / spec.path), sess_options=options, providers=PRIOR_PROVIDERS)
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise ModelLoadError(f"{manifest.name}: {spec.path} is not a loadable ONNX model") from exc
    _check_graph(manifest, spec, session)
    shape = PriorShape(spec.layers, spec.heads, spec.head_dim, (manifest.grid.height, manifest.grid.width),
                       manifest.codebook_size, spec.classes)
    step = session_step(session, spec.layers)
    prior = PriorRuntime(spec, shape, step, PriorCoder(step, shape, spec.prior_id))
    try:
        drawn = prior.sample(1, None, Sampling(), seed=0)
    except Exception as exc:  # a graph that loads but cannot run
        raise ModelLoadError(f"{manifest.name}: warm-up sampling with {spec.path} failed "
                             f"({type(exc).__name__})") from exc
    if drawn.shape != (1, *shape.grid) or not 0 <= int(drawn.min()) <= int(drawn.max()) < manifest.codebook_size:
        raise ModelLoadError(f"{manifest.name}: {spec.path} drew codes outside the codebook or the grid")
    return prior
