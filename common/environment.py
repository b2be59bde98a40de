"""Settings every process of the project applies before it imports a library: no telemetry, and
nothing written into the user's HOME (docs/development.md, "Where the tool writes").

- ONNX Runtime 1.32 creates a device id (``~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid``)
  and an SQLite telemetry store (``onnxruntime.db``) when it is imported, unless
  ``ORT_DISABLE_TELEMETRY=1`` is in the environment first (its own switch; calling
  ``onnxruntime.disable_telemetry_events()`` after the import still leaves both files).
- matplotlib keeps its settings and font cache in ``MPLCONFIGDIR`` (default ``~/.config/matplotlib``,
  ``~/.cache/matplotlib``), Keras its ``keras.json`` in ``KERAS_HOME`` (default ``~/.keras``): both go
  to the project's cache folder.

Children (forked stages, bench workers) inherit the environment. A variable the user set is kept.
"""

from __future__ import annotations

import os

from common.paths import CACHE_DIR

SETTINGS = {
    "ORT_DISABLE_TELEMETRY": "1",
    "MPLCONFIGDIR": str(CACHE_DIR / "matplotlib"),
    "KERAS_HOME": str(CACHE_DIR / "keras"),
}


def apply() -> None:
    """Call before anything imports onnxruntime, matplotlib or Keras (they read these at import)."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
