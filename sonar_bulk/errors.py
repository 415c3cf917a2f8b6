"""Exceptions raised by sonar-bulk.

Row-level validation problems are *data* (see :mod:`sonar_bulk.validate`), not exceptions.
Exceptions are for whole-run problems, and each maps to one exit code in :mod:`sonar_bulk.cli`::

    SonarBulkError              exit 2 unless a subclass says otherwise
    ├── InputError              sheet missing, unreadable, corrupt, or of the wrong shape
    ├── UsageError              options that contradict each other or name unknown things
    └── ConfigError             missing token, bad base URL
"""

from __future__ import annotations


class SonarBulkError(Exception):
    """Root of every error sonar-bulk raises on purpose. ``str(err)`` is a one-line message."""

    exit_code = 2


class InputError(SonarBulkError):
    """The input file cannot be read as a sheet (missing, corrupt, empty, encrypted, ...)."""


class UsageError(SonarBulkError):
    """Options or arguments that cannot work together."""


class ConfigError(SonarBulkError):
    """Configuration that makes an API call impossible (no token, malformed base URL)."""
