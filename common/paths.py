"""Where the repository keeps its data: one place, so moving a module never moves a data path."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Sample photos shipped with the project (MIT, see data/people/NOTICE.md): parity inputs,
#: calibration, and backgrounds of the synthetic task.
SAMPLE_PHOTOS_DIR = REPO_ROOT / "data" / "people"
#: Generated files (ignored by git but for their README).
ARTIFACTS_DIR = REPO_ROOT / "artifacts"
#: Reference weights built on demand and reused (M, L; XS and S also ship in WEIGHTS_DIR).
CHECKPOINT_CACHE_DIR = ARTIFACTS_DIR / "checkpoints"
#: The project's own cache: what libraries would otherwise write into HOME (matplotlib's font cache,
#: Keras' settings file), kept beside the project instead (docs/development.md, "Where the tool writes").
CACHE_DIR = ARTIFACTS_DIR / "cache"
