"""Advice in two wordings: the library's messages name command-line options (``pass
--header-row 3``); the web page names its own controls for the same advice (``set "Header
row" to 3``). What the advice is lives in one place, the message the library writes; this
table is only how the page says each piece of it. The command line keeps its wording.

Every control named here is on the page: "Header row", "Leave out rows with errors",
"Import extra columns as properties", "Default region", a column's choice in Columns, the
"Kind", "Send again", "Resume" and "Stop". Advice that needs an option the page does not
have (a default send time, a time zone for every row, sending blank merge fields, a file's
encoding) is said as what to do in the sheet instead: the page edits cells, and a file can be
saved again.
"""

from __future__ import annotations

import re

#: The command line's words → the page's, tried in order (earlier, longer phrases first).
PAGE_WORDING: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(cli), page)
    for cli, page in (
        (r"pass --header-row (\d+)", r'set "Header row" to \1'),
        (r"--header-row", '"Header row"'),
        (r"pass --skip-invalid", 'tick "Leave out rows with errors"'),
        (r"--skip-invalid", '"Leave out rows with errors"'),
        (
            r"name it property:<name> or pass --extra-columns properties to import it",
            'choose "Custom property" for it in Columns, or tick "Import extra columns as '
            'properties"',
        ),
        (
            r"pass --extra-columns properties to import it",
            'tick "Import extra columns as properties" to import it',
        ),
        (r"--extra-columns properties", '"Import extra columns as properties"'),
        (r"pass `?--default-region`?", 'set "Default region"'),
        (r"\(--default-region\)", '(the "Default region" setting)'),
        (r"`?--default-region`?", '"Default region"'),
        (r'pass --map "Header=([\w:]+)"', r"choose \1 for one of them in Columns"),
        (r"; or --map\)", "; or choose it in Columns)"),
        (r"remove one or use --map", 'choose "Don\'t import" for one in Columns'),
        (r"--map target", "the choice"),
        (r"\(--kind (\w+)\)", r'(choose the kind "\1")'),
        (r" or give --(?:tag|campaign-id|text|send-at) for every row", ""),
        (r", or --(?:tag|campaign-id) for all rows", ""),
        (r"\(sonar-bulk validate --report issues\.xlsx shows each\)", "(the grid shows each)"),
        (r", or give --default-send-time HH:MM", ""),
        (r", or another --default-send-time", ""),
        (r", a timezone column, or --timezone", ", or a timezone column"),
        (r" \(--allow-blank-merge\)", ""),
        (r", or pass --allow-blank-merge to send the gap", ""),
        (r"pass --encoding [\w-]+", "save it as UTF-8 and upload it again"),
        (r"give the encoding with --encoding", "save it as UTF-8 and upload it again"),
        (r"If accents look wrong, pass --encoding", "If accents look wrong, save it as UTF-8"),
        (r"\(--resend sends it\)", '(ticking "Send again" in Plan sends it)'),
        (
            r"\(a correction\? --resend sends it\)",
            '(a correction? ticking "Send again" in Plan sends it)',
        ),
        (r"--resend sends them", 'ticking "Send again" in Plan sends them'),
        (
            r"Sonar, then pass --retry-unknown to send it again",
            "Sonar; the page does not send it again",
        ),
        (r"--resume", "Resume"),
        (r"\(Ctrl-C\)", "(Stop)"),
    )
)

#: A command-line option named in a text (what the page must not show outside the command
#: line box).
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def for_the_page(message: str) -> str:
    """A message as the page says it: one line, naming the page's controls, not flags."""
    text = " ".join(message.split())
    for cli, page in PAGE_WORDING:
        text = cli.sub(page, text)
    return text
