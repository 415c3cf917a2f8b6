"""Rows hidden in the sheet (by hand, by an AutoFilter, in a collapsed outline group): a bulk
run skips them, as the person looking at the sheet expects, unless ``--include-hidden``."""

from __future__ import annotations

import numpy as np

from sonar_bulk.validation import Validation

#: ``sonar__error`` of a row skipped because the sheet hides it.
HIDDEN_REASON = "skipped (hidden in the sheet)"
#: How the reason of a row skipped as hidden begins: in this sheet, or in another one (the
#: ledger's record of a row some sheet hides).
HIDDEN_PREFIX = "skipped (hidden in "


def hidden_mask(validation: Validation, include_hidden: bool) -> np.ndarray | None:
    """Per data row: skipped because the sheet hides it (None when no row is). A results
    sheet fed back in hides nothing (CSV can't), so its rows reported hidden by the run that
    wrote it (``sonar__error``: hidden in that sheet, or in another one) count as hidden too,
    wherever the ledger is."""
    if include_hidden:
        return None
    sheet = validation.sheet
    hidden = sheet.hidden
    if "sonar__error" in sheet.headers:
        import pyarrow.compute as pc

        column = sheet.column(sheet.headers.index("sonar__error"))
        said = pc.starts_with(column, HIDDEN_PREFIX)
        reported = np.asarray(pc.fill_null(said, False), dtype=bool)
        hidden = reported if hidden is None else (hidden | reported)
    if hidden is None or not hidden.any():
        return None
    return hidden
