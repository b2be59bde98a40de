"""Integer recipes that adapt to the checkpoint: which layer costs what in int8, and what to keep float.

A *layer* here is one boundary of the architecture (judging/boundaries.py): the stem, a
downsampling layer, a block, the final norm, a head layer, the logits conv. Its ops in the fp32
flatbuffer are found by matching the boundaries to the flatbuffer's tensors (judging/divergence.py)
and taking the ops between one boundary and the next.

- :func:`sensitivity`: the joint error (p99, input px) of the model with **that layer alone** in int8
  (the rest float), with ai-edge-quantizer's per-op-scope recipes and the ranges of the one
  calibration pass. Per layer, not per op: an op alone is 2-4x more quantisations for no different
  decision (the float layer keeps all its ops float anyway); measured times in docs/integer-files.md.
- :func:`adapt`: when the full-integer recipe misses its budget, keep the k most sensitive layers
  float (k = 1, 2, 4, ...), re-quantise and re-measure, until the cost fits the budget or a limit
  is reached: a quarter of the layers float, or more than MAX_FLOAT_MAC_SHARE of the multiply-accumulates.
  The chosen file is then verified like every artifact (ExportRun.verify) before it can be published.

The limits are properties of the file, not timings: an earlier version stopped on a speed-up over fp32 timed
on the build machine during the export, so the file an export published depended on that machine's load (a
busy CI runner published no adaptive file where a quiet one did) and on x86 kernels, which do not rank files
the way a phone does (bench --arch arm64). The speed of the chosen file is the bench's to measure.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from exporters.converters import to_tflite_int8 as q
from judging.boundaries import JOINTS, boundaries, torch_boundaries
from judging.divergence import match
from models.network import ConvNeXtPose
from runtimes import litert

log = logging.getLogger(__name__)

#: At most this share of the layers is kept float: beyond it the file is no longer an integer model.
MAX_FLOAT_SHARE = 0.25
#: At most this share of the convolutions' multiply-accumulates is kept float. Why: an integer file is worth
#: shipping when it is clearly cheaper than the fp32 one (>= 1.5x); the emulated Cortex-A76 runs the int8 body
#: at 0.36x the fp32 file's instructions (bench --arch arm64), so a file with a share f of its MACs float costs
#: about f + 0.36 (1 - f) of fp32: 0.58x (1.7x cheaper) at f = 0.35, leaving room for the quantize /
#: dequantize ops around float layers.
MAX_FLOAT_MAC_SHARE = 0.35


@dataclass(frozen=True)
class Layer:
    """One boundary's ops in the fp32 flatbuffer."""

    name: str  # boundary (module path), e.g. backbone.stages.1.0
    label: str  # s1.b0
    scopes: tuple[str, ...]  # ai-edge-quantizer op scopes (output tensor names + ';')
    macs: int = 0  # multiply-accumulates of its convolutions for one input

    @property
    def regex(self) -> str:
        return "^(?:" + "|".join(re.escape(s) for s in self.scopes) + ")$"


def layers_of(fp32: bytes, model: ConvNeXtPose, x_file: np.ndarray, x_model: np.ndarray) -> list[Layer]:
    """The layers of ``fp32`` (a flatbuffer of ``model``): ``x_file`` is one input (1, 3, S, S) as the file
    takes it (NCHW; the runtime lays it out), ``x_model`` the same input as ``model`` takes it."""
    tensors = litert.intermediate_tensors(fp32, x_file)
    found = [b for b in boundaries(model) if b.name != JOINTS]
    matched = match([torch_boundaries(model, torch.from_numpy(x_model))], [tensors], found)
    macs = conv_macs(model, x_model)
    ops = litert.op_outputs(fp32)
    producer = {name: index for index, (_, outputs) in enumerate(ops) for name in outputs}
    # ai-edge-quantizer matches its per-op recipes against this scope: output names, each + ';'
    scopes = ["".join(f"{name};" for name in outputs) for _, outputs in ops]
    layers, start = [], 0
    for b in matched.boundaries:
        if b.tensor is None or b.snr_db is None or b.snr_db < 60.0:
            raise ValueError(f"the fp32 flatbuffer has no tensor for {b.boundary} (best {b.snr_db} dB): it is not "
                             "this network, or a converter changed it")
        end = producer[b.tensor] + 1
        layers.append(Layer(b.boundary, b.label, tuple(scopes[start:end]), macs.get(b.boundary, 0)))
        start = end
    return layers


def conv_macs(model: ConvNeXtPose, x_model: np.ndarray) -> dict[str, int]:
    """Boundary name -> multiply-accumulates of the convolutions inside it, for one input ``x_model``."""
    from torch import nn

    owner = {b.name: b.module for b in boundaries(model) if b.module is not None}
    totals = dict.fromkeys(owner, 0)
    hooks = []
    for name, module in owner.items():
        for conv in (m for m in module.modules() if isinstance(m, nn.Conv2d)):
            def count(m, _i, out, name=name):
                kh, kw = m.kernel_size
                totals[name] += out.numel() * (m.in_channels // m.groups) * kh * kw
            hooks.append(conv.register_forward_hook(count))
    try:
        with torch.no_grad():
            model(torch.from_numpy(x_model[:1]))
    finally:
        for h in hooks:
            h.remove()
    return totals


@dataclass(frozen=True)
class Attempt:
    float_layers: tuple[str, ...]
    cost_p99_input_px: float
    float_mac_share: float  # of the convolutions' multiply-accumulates, kept float


@dataclass
class Adaptation:
    """What :func:`adapt` tried and found."""

    sensitivity: list[tuple[str, float]]  # (layer, p99 input px with that layer alone int8), worst first
    attempts: list[Attempt] = field(default_factory=list)
    model: bytes | None = None  # the file that fit the budget (to be verified), None when none did
    limit: str | None = None  # why it stopped without a fit
    seconds: float = 0.0

    @property
    def float_layers(self) -> tuple[str, ...]:
        return self.attempts[-1].float_layers if self.attempts else ()

    def to_dict(self) -> dict:
        return {"sensitivity_p99_input_px": dict(self.sensitivity), "attempts": [asdict(a) for a in self.attempts],
                "float_layers": list(self.float_layers), "limit": self.limit, "seconds": round(self.seconds, 1),
                "max_float_share": MAX_FLOAT_SHARE, "max_float_mac_share": MAX_FLOAT_MAC_SHARE}


#: candidate flatbuffer -> p99 2-D joint error vs PyTorch fp32 on the judged inputs, input px
Evaluate = Callable[[bytes], float]


def sensitivity(fp32: bytes, layers: list[Layer], qsvs: dict, evaluate: Evaluate,
                base: q.StaticRecipe = q.W8A8_MIXED) -> list[tuple[str, float]]:
    """Each layer alone in int8 (``base``'s settings, the rest float): its joint error, worst first."""
    costs = []
    for layer in layers:
        recipe = replace(base, name=f"{layer.label} alone", only_scopes=(layer.regex,))
        costs.append((layer.name, evaluate(q.quantize_with_ranges(fp32, recipe, qsvs))))
    return sorted(costs, key=lambda item: -item[1])


def adapt(fp32: bytes, layers: list[Layer], qsvs: dict, evaluate: Evaluate, budget_px: float,
          base: q.StaticRecipe = q.W8A8_MIXED) -> Adaptation:
    """Keep the most sensitive layers float, doubling their number until the cost fits ``budget_px``
    or a limit (MAX_FLOAT_SHARE of the layers, MAX_FLOAT_MAC_SHARE of the MACs) is reached."""
    started = time.perf_counter()
    ranked = sensitivity(fp32, layers, qsvs, evaluate, base)
    result = Adaptation(ranked)
    regex = {layer.name: layer.regex for layer in layers}
    macs = {layer.name: layer.macs for layer in layers}
    all_macs = max(1, sum(macs.values()))
    most = max(1, int(MAX_FLOAT_SHARE * len(layers)))
    k = 1
    while True:
        kept = tuple(name for name, _ in ranked[:k])
        recipe = replace(base, name=q.ADAPTIVE, float_scopes=tuple(regex[name] for name in kept))
        candidate = q.quantize_with_ranges(fp32, recipe, qsvs)
        share = sum(macs[name] for name in kept) / all_macs
        attempt = Attempt(kept, evaluate(candidate), round(share, 4))
        result.attempts.append(attempt)
        log.info("%s: %d layer(s) float (%.1f %% of the MACs) -> cost p99 %.3g input px", q.ADAPTIVE, k,
                 100 * share, attempt.cost_p99_input_px)
        if share > MAX_FLOAT_MAC_SHARE:
            result.limit = (f"with {k} layer(s) float, {share:.0%} of the multiply-accumulates are float (> "
                            f"{MAX_FLOAT_MAC_SHARE:.0%}: no longer an integer model) at "
                            f"{attempt.cost_p99_input_px:.3g} px")
            break
        if attempt.cost_p99_input_px <= budget_px:
            result.model = candidate
            break
        if k >= most:
            result.limit = (f"{k} of {len(layers)} layers float (the limit, {MAX_FLOAT_SHARE:.0%}) still cost "
                            f"{attempt.cost_p99_input_px:.3g} px > {budget_px:g}")
            break
        k = min(2 * k, most)
    result.seconds = time.perf_counter() - started
    return result
