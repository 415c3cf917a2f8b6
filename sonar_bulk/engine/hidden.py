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
