"""A whole bulk run, from a validated sheet to the results sheet: the engine's public names, from
the modules that do each job (the CLI only parses flags and talks to people through a
:class:`~sonar_bulk.engine.talk.Ui`; :func:`sonar_bulk.engine.run.run_sheet` runs the steps in
order).

- :mod:`~sonar_bulk.engine.options`: every knob (:class:`BulkOptions`), the stop signal
- :mod:`~sonar_bulk.engine.prepare`: each row's call or the reason it is not made
  (:func:`prepare`), looked up in the journal and the ledger, ``--limit``, quiet hours
- :mod:`~sonar_bulk.engine.prepared`: what prepare decided (:class:`Prepared`,
  :class:`Disposition`, :func:`plan_facts`)
- :mod:`~sonar_bulk.engine.guard`: who was sent what, before, during and after a run
- :mod:`~sonar_bulk.engine.quiet`: quiet hours
- :mod:`~sonar_bulk.engine.diff`: ``--diff`` (what Sonar has now)
- :mod:`~sonar_bulk.engine.execute`: the run itself and its results (:func:`execute`)
- :mod:`~sonar_bulk.engine.signals`: Ctrl-C, SIGTERM and SIGHUP during a run
- :mod:`~sonar_bulk.engine.summary`: the JSON summary and the resume command
"""

from __future__ import annotations

from sonar_bulk.engine.diff import describe_change, read_current
from sonar_bulk.engine.execute import (
    EXIT_RESULTS_LOST,
    Report,
    check_outputs,
    execute,
    write_outputs,
)
from sonar_bulk.engine.options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE,
    FLAGS,
    BulkOptions,
    StopSignal,
    parse_quiet_hours,
)
from sonar_bulk.engine.prepare import blocking_errors, prepare
from sonar_bulk.engine.prepared import (
    DONE_BEFORE,
    DUPLICATE,
    GUARDED,
    HELD,
    HIDDEN,
    INVALID,
    LIMITED,
    NO_CONSENT,
    PAST,
    QUIET_SKIP,
    RUN,
    SENT_BEFORE,
    UNCHANGED,
    Disposition,
    Prepared,
    plan_facts,
)
from sonar_bulk.engine.summary import command_line, json_summary, resume_command
from sonar_bulk.errors import InvalidRows, UnsendableRows

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RATE",
    "DONE_BEFORE",
    "DUPLICATE",
    "EXIT_RESULTS_LOST",
    "FLAGS",
    "GUARDED",
    "HELD",
    "HIDDEN",
    "INVALID",
    "LIMITED",
    "NO_CONSENT",
    "PAST",
    "QUIET_SKIP",
    "RUN",
    "SENT_BEFORE",
    "UNCHANGED",
    "BulkOptions",
    "Disposition",
    "InvalidRows",
    "Prepared",
    "Report",
    "StopSignal",
    "UnsendableRows",
    "blocking_errors",
    "check_outputs",
    "command_line",
    "describe_change",
    "execute",
    "json_summary",
    "parse_quiet_hours",
    "plan_facts",
    "prepare",
    "read_current",
    "resume_command",
    "write_outputs",
]
