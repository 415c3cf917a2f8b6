"""sonar-bulk: validate spreadsheets and push them into Sonar (sendsonar.com) safely and fast."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sonar-bulk")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
