"""sonar-bulk: validate spreadsheets and push them into Sonar (sendsonar.com) safely and fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["OPERATION_NAMES", "Checked", "RunReport", "__version__", "run", "validate"]

if TYPE_CHECKING:
    __version__: str

    from sonar_bulk.library import OPERATION_NAMES, Checked, RunReport, run, validate


_API = ("validate", "run", "Checked", "RunReport", "OPERATION_NAMES")


def __getattr__(name: str) -> Any:
    """The Python API (:mod:`sonar_bulk.library`), imported when first used: the command
    line starts without it; so is ``__version__`` (importlib.metadata is slow to import)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("sonar-bulk")
        except PackageNotFoundError:  # running from a source tree without installing
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    if name in _API:
        from sonar_bulk import library

        return getattr(library, name)
    raise AttributeError(f"module 'sonar_bulk' has no attribute {name!r}")


def __dir__() -> list[str]:
    hidden = {"Any", "TYPE_CHECKING", "annotations", "_API"}
    return sorted({*globals(), *_API, "__version__"} - hidden)
