"""Where an artifact departs from PyTorch: its tensors at the architecture's boundaries, compared.

Converters rename, fuse, transpose and split ops, so an artifact's tensors cannot be found by
name. Each boundary (judging/boundaries.py) is matched to the artifact tensor that (a) has the
boundary's shape, as is or NHWC, (b) comes after the tensor matched to the previous boundary, and
(c) is closest to PyTorch's, i.e. the tensor a faithful conversion would compute there. The error
at a boundary is then what that tensor carries, as a signal-to-noise ratio:

    SNR = 10 log10( sum(ref^2) / sum((artifact - ref)^2) )   in dB, summed over the images

It needs no unit and compares across layers of any scale: 20 dB is an error of 10 % of the
tensor's RMS, 40 dB 1 %, 60 dB 0.1 %. fp32 conversions sit near float rounding (> 80 dB), fp16
near 50-70 dB, int8 near 20-40 dB. Errors of successive boundaries add up; a conversion bug shows
as a sudden drop (see :func:`first_jump`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from judging.boundaries import Boundary
from runtimes.session import Tensors

#: Reported SNRs are capped here: above it a difference is float rounding, and uncapped values of
#: bit-identical tensors (infinite) would make jumps out of nothing.
CEILING_DB = 80.0
#: A boundary this far below every boundary before it is where the error jumped: 15 dB is a 5.6x
#: larger error in one step. Measured (docs/diagnose.md): the 10 artifacts of XS and S never fall
#: more than 6.2 dB below their lowest earlier boundary; a dropped BatchNorm falls by more than 60 dB.
JUMP_DB = 15.0


def snr_db(signal_sq: float, error_sq: float) -> float:
    if error_sq <= 0.0:
        return CEILING_DB
    if signal_sq <= 0.0:
        return -CEILING_DB
    return float(min(CEILING_DB, 10.0 * math.log10(signal_sq / error_sq)))


def _view(value: np.ndarray, transposed: bool) -> np.ndarray:
    return value.transpose(0, 3, 1, 2) if transposed else value


def _layouts(value: np.ndarray, shape: tuple[int, ...]) -> list[bool]:
    """How ``value`` can be the boundary's NCHW ``shape``: as is (False) and/or from NHWC (True)."""
    return [t for t in (False, True) if (value.ndim == 4 or not t) and _view(value, t).shape == shape]


@dataclass
class _Sums:
    signal: float = 0.0
    error: float = 0.0

    def add(self, ref: np.ndarray, value: np.ndarray) -> None:
        ref64 = ref.astype(np.float64)
        self.signal += float(np.square(ref64).sum())
        self.error += float(np.square(value.astype(np.float64) - ref64).sum())

    @property
    def snr(self) -> float:
        return snr_db(self.signal, self.error)


@dataclass(frozen=True)
class BoundaryError:
    boundary: str
    label: str
    tensor: str | None  # the artifact tensor matched to it (None: no tensor of that shape after the previous)
    transposed: bool  # matched through NHWC -> NCHW
    snr_db: float | None
    max_abs: float | None  # largest |artifact - PyTorch| at this boundary, in the tensor's own unit


@dataclass
class Divergence:
    """One artifact's error at every boundary, on ``images`` inputs."""

    file: str
    images: int
    boundaries: list[BoundaryError] = field(default_factory=list)

    @property
    def first_jump(self) -> BoundaryError | None:
        return first_jump(self.boundaries)

    @property
    def entry(self) -> BoundaryError | None:
        return entry(self.boundaries)

    def to_dict(self) -> dict:
        jump, enters = self.first_jump, self.entry
        return {"file": self.file, "images": self.images, "error_enters_at": enters.boundary if enters else None,
                "first_jump": jump.boundary if jump else None, "boundaries": [asdict(b) for b in self.boundaries]}


def entry(errors: list[BoundaryError]) -> BoundaryError | None:
    """Where the error enters: the first boundary clearly below float rounding (JUMP_DB under the
    ceiling) or with no matching tensor. For fp16 and int8 files that is the first quantised layer."""
    return next((e for e in errors if e.snr_db is None or e.snr_db <= CEILING_DB - JUMP_DB), None)


def first_jump(errors: list[BoundaryError]) -> BoundaryError | None:
    """The first boundary after the first one that has no matching tensor or is at least JUMP_DB below
    the lowest SNR before it: where something beyond the file's own precision went wrong (a dropped
    op, an outlier layer). Against the lowest, not the previous: an SNR that recovers (the joints,
    large numbers) must not hide or fake a jump. The first boundary has nothing before it: ``entry``
    shows its level."""
    if not errors:
        return None
    lowest = CEILING_DB if errors[0].snr_db is None else errors[0].snr_db
    for e in errors[1:]:
        if e.snr_db is None or e.snr_db <= lowest - JUMP_DB:
            return e
        lowest = min(lowest, e.snr_db)
    return None


def _alignment(scores: np.ndarray) -> list[int | None]:
    """For each boundary (row), the tensor (column) it is matched to: positions strictly increasing,
    the sum of SNRs the largest (dynamic programming). Rows with no candidate (-inf) get None.

    Best-per-boundary alone would let a boundary after a broken one grab a later tensor that happens
    to be closer, and starve the boundaries after it."""
    rows = [r for r in range(scores.shape[0]) if np.isfinite(scores[r]).any()]
    n = scores.shape[1]
    total = np.full((len(rows), n), -np.inf)
    back = np.zeros((len(rows), n), dtype=np.int64)
    for k, r in enumerate(rows):
        if k == 0:
            total[k] = scores[r]
            continue
        # best total of the previous row over columns < i, and where it is
        prev = np.concatenate([[-np.inf], np.maximum.accumulate(total[k - 1])[:-1]])
        where = np.concatenate([[0], _running_argmax(total[k - 1])[:-1]])
        total[k] = scores[r] + prev
        back[k] = where
    chosen: list[int | None] = [None] * scores.shape[0]
    if not rows or not np.isfinite(total[-1]).any():  # no increasing assignment: the best tensor each
        for r in rows:
            chosen[r] = int(np.argmax(scores[r]))
        return chosen
    column = int(np.argmax(total[-1]))
    for k in range(len(rows) - 1, -1, -1):
        chosen[rows[k]] = column
        column = int(back[k, column])
    return chosen


def _running_argmax(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values), dtype=np.int64)
    for i in range(1, len(values)):
        out[i] = i if values[i] > values[out[i - 1]] else out[i - 1]
    return out


def match(references: list[dict[str, np.ndarray]], runs: list[Tensors], found: list[Boundary],
          file: str = "") -> Divergence:
    """Match each boundary to an artifact tensor on the first input and measure every input with those
    tensors. ``references[i]``: PyTorch per boundary name for input i; ``runs[i]``: the artifact's
    tensors for input i, in execution order (same names and order for every input)."""
    first = runs[0]
    scores = np.full((len(found), len(first)), -np.inf)
    layouts = np.zeros((len(found), len(first)), dtype=bool)
    for r, b in enumerate(found):
        ref = references[0][b.name]
        for i, (_, value) in enumerate(first):
            for transposed in _layouts(value, ref.shape):
                sums = _Sums()
                sums.add(ref, _view(value, transposed))
                snr = max(sums.snr, -CEILING_DB)
                if snr > scores[r, i]:
                    scores[r, i], layouts[r, i] = snr, transposed
    by_name = [dict(run) for run in runs]
    result = Divergence(file, len(runs))
    for r, (b, index) in enumerate(zip(found, _alignment(scores))):
        if index is None:
            result.boundaries.append(BoundaryError(b.name, b.label, None, False, None, None))
            continue
        name, transposed = first[index][0], bool(layouts[r, index])
        sums, max_abs = _Sums(), 0.0
        for refs, tensors in zip(references, by_name):
            view = _view(tensors[name], transposed)
            sums.add(refs[b.name], view)
            max_abs = max(max_abs, float(np.abs(view.astype(np.float64) - refs[b.name]).max()))
        result.boundaries.append(BoundaryError(b.name, b.label, name, transposed, round(sums.snr, 2), max_abs))
    return result
