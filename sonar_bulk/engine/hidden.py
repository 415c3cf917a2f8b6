"""Rows hidden in the sheet (by hand, by an AutoFilter, in a collapsed outline group): a bulk
run skips them, as the person looking at the sheet expects, unless ``--include-hidden``."""

from __future__ import annotations

import numpy as np

from sonar_bulk.validate import Validation

#: ``sonar__error`` of a row skipped because the sheet hides it.
HIDDEN_REASON = "skipped (hidden in the sheet)"


def hidden_mask(validation: Validation, include_hidden: bool) -> np.ndarray | None:
    """Per data row: skipped because the sheet hides it (None when no row is)."""
    hidden = validation.sheet.hidden
    if include_hidden or hidden is None or not hidden.any():
        return None
    return hidden


def blocking_errors(validation: Validation, include_hidden: bool) -> int:
    """Error issues that stop a run (without --skip-invalid): every one, except those on rows
    the run skips because the sheet hides them (they are never sent). Errors on the header
    (a missing column) always count."""
    errors = validation.errors
    hidden = hidden_mask(validation, include_hidden)
    if not errors or hidden is None:
        return errors
    issues = validation.issues.columns
    rows = np.asarray(issues["row"])
    is_error = np.asarray(issues["severity"].to_numpy(zero_copy_only=False) == "error")
    skipped = np.isin(rows, validation.sheet.row_numbers[hidden])
    return int((is_error & ~skipped).sum())
