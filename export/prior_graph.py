"""The prior as one ONNX graph that advances every sequence by one position, given a key/value cache.

    prior.onnx
      previous      int64   [N]                  the code at position t − 1 (read only when t > 0)
      position      int64   [1]                  t, in [0, T)
      label         int64   [N]                  class in [0, classes); `classes` means "no class"
      past_key_i    float32 [N, heads, T, dh]    layer i's keys of positions < t (later slots ignored)
      past_value_i  float32 [N, heads, T, dh]    layer i's values, likewise      (i = 0 … layers − 1)
      -> logits     float32 [N, K]               position t's distribution, before the softmax
         key_i      float32 [N, heads, dh]       layer i's key and value of position t, which the
         value_i    float32 [N, heads, dh]       caller writes into slot t of its cache

The cache has all T slots from the start and the caller writes one per step, so the graph's shapes
never change (onnxruntime runs the same kernels at every step, and a stream's encoder and decoder
compute the same probabilities), and the graph only reads the cache: it is never copied, which
one graph returning the whole updated cache would do at every step (a where and a concat of it
took 80 % of a step). Slots t and after are masked out; position t attends to itself through its
own new key and value.
"""

import contextlib
import io
import logging
import math
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from contract.manifest import prior_io
from export.graphs import OPSET
from training.prior_model import Block, CodePrior


class PriorStepGraph(nn.Module):
    def __init__(self, prior: CodePrior) -> None:
        super().__init__()
        self.prior = prior.eval()
        cfg = prior.cfg
        self.heads, self.head_dim, self.slots = cfg.heads, cfg.width // cfg.heads, cfg.positions

    def forward(self, previous: torch.Tensor, position: torch.Tensor, label: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p, n = self.prior, previous.shape[0]
        slots = torch.arange(self.slots, device=previous.device)  # (T,)
        # Position 0 reads the start token (the class); every later one the code before it. (N, D)
        token = torch.where(position[:, None] == 0, p.starts(label), p.codes(previous))
        x = token + p.position.index_select(0, position)
        unwritten = (slots >= position).view(1, 1, 1, self.slots)  # slots t and after
        new: list[torch.Tensor] = []
        blocks: list[Block] = list(p.blocks)  # type: ignore[arg-type]  # a ModuleList of Blocks
        for i, block in enumerate(blocks):
            keys, values = past[2 * i], past[2 * i + 1]  # (N, heads, T, dh)
            q, k, v = (t.reshape(n, self.heads, 1, self.head_dim) for t in block.qkv(block.norm1(x)).chunk(3, -1))
            scores = torch.cat([(q @ keys.transpose(2, 3)).masked_fill(unwritten, float("-inf")),
                                (q * k).sum(-1, keepdim=True)], dim=-1) / math.sqrt(self.head_dim)  # (N, h, 1, T+1)
            weights = scores.softmax(-1)
            attended = weights[..., : self.slots] @ values + weights[..., self.slots :] * v  # (N, heads, 1, dh)
            x = x + block.proj(attended.reshape(n, -1))
            x = x + block.mlp(block.norm2(x))
            new += [k[:, :, 0], v[:, :, 0]]  # (N, heads, dh)
        return (p.head(p.norm(x)), *new)

    def example(self, n: int = 2) -> tuple[torch.Tensor, ...]:
        cache = [torch.zeros(n, self.heads, self.slots, self.head_dim) for _ in range(2 * len(self.prior.blocks))]
        return (torch.zeros(n, dtype=torch.long), torch.tensor([0]), torch.zeros(n, dtype=torch.long), *cache)


def export_prior_graph(prior: CodePrior, path: Path) -> None:
    """Export the step graph with a dynamic batch N to `path` (opset OPSET), quietly."""
    graph = PriorStepGraph(prior)
    inputs, outputs = prior_io(len(prior.blocks))
    n = torch.export.Dim("N", min=1, max=4096)
    shapes = ({0: n}, None, {0: n}, tuple({0: n} for _ in inputs[3:]))  # *past is one argument to torch.export
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(graph, graph.example(), input_names=inputs, output_names=outputs,
                                    dynamic_shapes=shapes, opset_version=OPSET, dynamo=True, verbose=False)
    assert program is not None
    proto = program.model_proto
    for value_info in (*proto.graph.input, *proto.graph.output):
        for dim in value_info.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = "N"
    onnx.save(proto, str(path))
