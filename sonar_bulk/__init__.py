"""sonar-bulk: validate spreadsheets and push them into Sonar (sendsonar.com) safely and fast."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("sonar-bulk")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["OPERATION_NAMES", "Checked", "RunReport", "__version__", "run", "validate"]

if TYPE_CHECKING:
    from sonar_bulk.library import OPERATION_NAMES, Checked, RunReport, run, validate


_API = ("validate", "run", "Checked", "RunReport", "OPERATION_NAMES")


def __getattr__(name: str) -> Any:
    """The Python API (:mod:`sonar_bulk.library`), imported when first used: the command
    line starts without it."""
    if name in _API:
        from sonar_bulk import library

        return getattr(library, name)
    raise AttributeError(f"module 'sonar_bulk' has no attribute {name!r}")


def __dir__() -> list[str]:
    hidden = {"Any", "TYPE_CHECKING", "PackageNotFoundError", "version", "annotations", "_API"}
    return sorted({*globals(), *_API} - hidden)
