"""Where the time goes: the network cut into stages, each timed in ONNX Runtime and TFLite.

`convnextpose profile OUT` cuts the graph at stage boundaries (stem+stage 0, stages 1-3, head,
soft-argmax tail) and times every piece, each in its own process with the same threads: ONNX
Runtime on OUT's simplified ONNX, TFLite on that same graph converted plainly, and TFLite on the
graph the export really converts (with the mobile_graph rewrite). The per-stage ratios show
whether a gap is everywhere (kernels) or in one place (one op).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from benchmarks.latency import LatencySettings, measure
from common.errors import ConvNeXtPoseError
from common.tables import format_table
from judging.manifest import Manifest
from runtimes.litert import interpreter
from runtimes.onnxrt import inference_session

log = logging.getLogger(__name__)
_PREFIXES = [("stem + stage 0", "/backbone/stages.0/"), ("stage 1", "/backbone/stages.1/"),
             ("stage 2", "/backbone/stages.2/"), ("stage 3 + norm", "/backbone/"), ("head", "/head/")]


@dataclass(frozen=True)
class Segment:
    name: str
    input: str
    output: str


@dataclass(frozen=True)
class SegmentTiming:
    name: str
    ort_p50_ms: float  # the shipped simplified ONNX
    tflite_plain_p50_ms: float  # the same graph through onnx2tf, no rewrite
    tflite_p50_ms: float  # the graph the export really converts (mobile_graph rewrite)

    @property
    def ratio(self) -> float:
        return self.tflite_p50_ms / self.ort_p50_ms


def cut_points(model: onnx.ModelProto) -> list[Segment]:
    """Consecutive single-input, single-output pieces ending at the last node of each prefix."""
    names = [n.name for n in model.graph.node]
    boundary = model.graph.input[0].name
    segments = []
    for label, prefix in _PREFIXES:
        last = max(i for i, name in enumerate(names) if name.startswith(prefix))
        out = model.graph.node[last].output[0]
        segments.append(Segment(label, boundary, out))
        boundary = out
    segments.append(Segment("soft-argmax tail", boundary, model.graph.output[0].name))
    return segments


def _time_in_subprocess(kind: str, path: Path, threads: int, settings: LatencySettings) -> float:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.profile", kind, str(path), str(threads),
                           json.dumps(asdict(settings))], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"timing {path.name} in {kind} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["p50_ms"]


def _tflite_piece(onnx_path: Path, seg: Segment, work: Path, calibration_images: np.ndarray) -> Path:
    from exporters.converters import to_tflite

    work.mkdir(parents=True, exist_ok=True)
    piece = work / "piece.onnx"
    onnx.utils.extract_model(str(onnx_path), str(piece), [seg.input], [seg.output])
    tflite = work / "piece.tflite"
    tflite.write_bytes(to_tflite.keras_to_tflite(to_tflite.onnx_to_keras(piece, work, calibration_images), "fp32"))
    return tflite


def _rewritten_onnx(manifest: Manifest, path: Path) -> None:
    """The ONNX the TFLite stage converts: the manifest's checkpoint, its contract, the XNNPACK rewrite."""
    from exporters.converters import to_onnx
    from exporters.converters.mobile_graph import for_xnnpack
    from exporters.converters.simplify import simplify_onnx
    from models.contract import InputContract
    from models.folding import fold_normalization

    loaded = manifest.load_checkpoint()
    folded = manifest.normalization_folded
    model = fold_normalization(loaded.build_model()) if folded else loaded.build_model()
    contract = InputContract.for_spec(loaded.spec, folded)
    to_onnx.export_onnx(for_xnnpack(model)[0], contract, path, {})
    simplify_onnx(path, path, "onnxsim", {})


def profile_stages(out_dir: Path, threads: int = 2, settings: LatencySettings | None = None) -> list[SegmentTiming]:
    from judging.inputs import parity_inputs

    manifest = Manifest.read(out_dir)
    simplified = [a.file for a in manifest.artifacts if a.format == "onnx-simplified"]
    if not simplified:
        raise ConvNeXtPoseError(f"{out_dir}/manifest.json lists no simplified ONNX: export with the onnx format")
    settings = settings or LatencySettings(min_runs=30, min_seconds=2.0)
    calibration_images = parity_inputs(manifest.spec.input_size).images
    timings = []
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        work = Path(tmp)
        shipped, rewritten = out_dir / simplified[0], work / "rewritten.onnx"
        _rewritten_onnx(manifest, rewritten)
        pieces = zip(cut_points(onnx.load(str(shipped))), cut_points(onnx.load(str(rewritten))))
        for i, (seg, seg_rewritten) in enumerate(pieces):
            (work / f"ort{i}").mkdir()
            ort_piece = work / f"ort{i}" / "piece.onnx"
            onnx.utils.extract_model(str(shipped), str(ort_piece), [seg.input], [seg.output])
            plain = _tflite_piece(shipped, seg, work / f"plain{i}", calibration_images)
            exported = _tflite_piece(rewritten, seg_rewritten, work / f"rewritten{i}", calibration_images)
            timing = SegmentTiming(seg.name, *(_time_in_subprocess(kind, path, threads, settings) for kind, path in
                                               (("onnx", ort_piece), ("tflite", plain), ("tflite", exported))))
            log.info("%-18s ORT %.2f ms  TFLite plain %.2f ms  TFLite as exported %.2f ms", seg.name,
                     timing.ort_p50_ms, timing.tflite_plain_p50_ms, timing.tflite_p50_ms)
            timings.append(timing)
    return timings


def stage_table(timings: list[SegmentTiming]) -> str:
    rows = [(t.name, f"{t.ort_p50_ms:.2f}", f"{t.tflite_plain_p50_ms:.2f}", f"{t.tflite_p50_ms:.2f}", f"{t.ratio:.2f}")
            for t in timings]
    ort, plain, tfl = (sum(getattr(t, f) for t in timings)
                       for f in ("ort_p50_ms", "tflite_plain_p50_ms", "tflite_p50_ms"))
    rows.append(("**sum**", f"{ort:.2f}", f"{plain:.2f}", f"{tfl:.2f}", f"{tfl / ort:.2f}"))
    return format_table(("stage", "ORT p50 ms", "TFLite p50 ms, plain graph", "TFLite p50 ms, as exported",
                         "as exported / ORT"), rows, markdown=True)


def _time_one(kind: str, path: str, threads: int, settings: LatencySettings) -> float:
    """Subprocess side: random input of the piece's own shape, p50 ms."""
    rng = np.random.default_rng(0)
    if kind == "onnx":
        session = inference_session(Path(path), threads)
        inp = session.get_inputs()[0]
        x = rng.random(inp.shape, dtype=np.float32)
        return measure(lambda: session.run(None, {inp.name: x}), settings).p50_ms
    it = interpreter(Path(path), threads)
    it.allocate_tensors()
    detail = it.get_input_details()[0]
    x = rng.random(detail["shape"], dtype=np.float32)

    def run() -> None:
        it.set_tensor(detail["index"], x)
        it.invoke()

    return measure(run, settings).p50_ms


if __name__ == "__main__":
    kind, path, threads, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    print(json.dumps({"p50_ms": _time_one(kind, path, threads, LatencySettings(**settings))}))
