"""Lets the examples run from the source tree without installing the package (python/ on the path)."""
import sys
from pathlib import Path

try:
    import busd  # noqa: F401  (installed: pip install ./python, or meson install)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "python"))
