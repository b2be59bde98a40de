"""ONNX -> ORT Mobile format (.ort) with ONNX Runtime's own converter, plus the operator list a reduced build needs.

``onnxruntime.tools.convert_onnx_models_to_ort`` (the package's converter, run as its docs say) with
the "Runtime" optimisation style, the one ORT's docs name for NNAPI and Core ML: basic optimisations
applied, the rest saved in the file and replayed when the app sets
``session.enable_saved_runtime_optimizations`` (what ``runtimes/onnxrt.py`` does for a .ort, so the
file judged is the file as the app runs it), and ``--target_platform arm`` (int8 QDQ kept as the
arm64 kernels want it). The converter also writes the operator configuration of a reduced ORT build
(``build.py --minimal_build --include_ops_by_config``) for every file converted in one call.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from common.errors import ExportError
from common.files import copy_atomic, write_atomic


def convert(sources: dict[Path, Path], config_out: Path) -> dict:
    """Convert each ONNX file (key) to the .ort file (value), and write the reduced-build operator
    configuration covering them all to ``config_out``. Returns the configuration's operators."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    # its module logger is set to DEBUG on import: as quiet as the rest of onnxruntime (common/quiet.py)
    logging.getLogger("ort_format_model.utils").setLevel(logging.getLogger("onnxruntime").getEffectiveLevel())

    with tempfile.TemporaryDirectory(prefix="ort-", dir=config_out.parent) as tmp:
        inputs, outputs = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        for src in sources:
            shutil.copyfile(src, inputs / src.name)
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):  # the converter prints its progress
                convert_onnx_models_to_ort(inputs, output_dir=outputs, optimization_styles=[OptimizationStyle.Runtime],
                                           target_platform="arm")
        except Exception as exc:
            raise ExportError(f"ONNX Runtime's .ort converter failed: {type(exc).__name__}: {exc}") from None
        for src, dst in sources.items():
            converted = outputs / Path(src.name).with_suffix(".with_runtime_opt.ort")
            if not converted.is_file():
                raise ExportError(f"ONNX Runtime's .ort converter wrote no file for {src.name}: "
                                  f"{said.getvalue()[-300:]}")
            copy_atomic(converted, dst)
        configs = sorted(outputs.glob("*.config"))
        if len(configs) != 1:
            raise ExportError(f"expected one reduced-build operator configuration, found {[c.name for c in configs]}")
        # its header names the temporary paths it was converted in: name the published files instead
        lines = [line for line in configs[0].read_text().splitlines() if not line.startswith("#")]
        header = ["# Operators of a reduced ONNX Runtime build (build.py --minimal_build --include_ops_by_config) that",
                  f"# runs {', '.join(dst.name for dst in sources.values())}; written by onnxruntime's "
                  "convert_onnx_models_to_ort"]
        write_atomic(config_out, lambda tmp: Path(tmp).write_text("\n".join(header + lines) + "\n"))
    return {"converter": "onnxruntime.tools.convert_onnx_models_to_ort, optimization style Runtime, target arm",
            "reduced_build_config": config_out.name, "operators": operators(config_out)}


def operators(config: Path) -> dict[str, list[str]]:
    """domain;opset -> operators, from a reduced-build configuration (``ai.onnx;17;Conv,Relu`` lines)."""
    found: dict[str, list[str]] = {}
    for line in config.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, opset, ops = line.strip().split(";", 2)
            found[f"{domain};{opset}"] = sorted(ops.split(","))
    return found
