"""The ``sonar-bulk`` command line: thin commands over the library.

Exit codes (one mapping, here):

\b
  0   success; validation found no errors (warnings allowed)
  1   validation found at least one row with an error
  2   usage error, or input that cannot be read
  70  internal error (a bug: please report it)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from sonar_bulk import __version__
from sonar_bulk.errors import SonarBulkError, UsageError
from sonar_bulk.schema import KINDS

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 70, 130


def _kinds_help() -> str:
    from sonar_bulk.schema import kind_columns

    return "\n".join(
        f"  {kind.name}: {kind_columns(kind).replace('`', '')}" for kind in KINDS.values()
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sonar-bulk")
def cli() -> None:
    """Validate spreadsheets and push them into Sonar (sendsonar.com) safely.

    \b
    Exit codes: 0 ok, 1 rows with errors, 2 usage or unreadable input,
    70 internal error, 130 interrupted.
    """


def input_options(func: Any) -> Any:
    """Options shared by every command that reads a sheet."""
    for option in reversed(
        [
            click.option(
                "--sheet", metavar="NAME", help="Workbook sheet (default: first visible)."
            ),
            click.option(
                "--encoding",
                metavar="ENC",
                help="CSV encoding (default: UTF-8/UTF-16 by BOM, else cp1252 fallback).",
            ),
            click.option(
                "--delimiter",
                metavar="CHAR",
                help="CSV delimiter (default: sniffed among , ; tab |).",
            ),
            click.option(
                "--map",
                "mappings",
                multiple=True,
                metavar='"Header=field"',
                help="Map a source header onto a field; repeatable.",
            ),
            click.option(
                "--default-region",
                default="US",
                show_default=True,
                metavar="CC",
                help="Region for phone numbers written without a country code.",
            ),
        ]
    ):
        func = option(func)
    return func


@cli.command("validate", epilog="Kinds and columns (* = required):\n\n\b\n" + _kinds_help())
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--kind",
    "kind_name",
    required=True,
    type=click.Choice(list(KINDS)),
    help="What the sheet holds.",
)
@input_options
@click.option(
    "--extra-columns",
    type=click.Choice(["warn", "properties", "ignore"]),
    default="warn",
    show_default=True,
    help="customers: unknown columns are reported (warn), imported as custom "
    "properties, or ignored.",
)
@click.option(
    "--campaign-id",
    metavar="ID",
    help="campaign_recipients: campaign for rows without a campaign_id.",
)
@click.option(
    "--timezone",
    metavar="TZ",
    help="campaign_recipients: zone for send_at values without an offset.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Write the issues to this .csv or .xlsx file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--split",
    is_flag=True,
    help="Write <stem>.valid.<ext> and <stem>.invalid.<ext> beside the input.",
)
@click.option(
    "--max-issues", default=10, show_default=True, metavar="N", help="Issues shown in the summary."
)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def validate_cmd(
    file: Path,
    kind_name: str,
    sheet: str | None,
    encoding: str | None,
    delimiter: str | None,
    mappings: tuple[str, ...],
    default_region: str,
    extra_columns: str,
    campaign_id: str | None,
    timezone: str | None,
    report_path: Path | None,
    as_json: bool,
    split: bool,
    max_issues: int,
    quiet: bool,
) -> None:
    """Check every row of FILE before anything touches the API (a dry run).

    Reports each problem with its row (as Excel numbers it, header = row 1), column, value, a
    stable code and how to fix it. Exit 0 when no row has an error, 1 otherwise.

    \b
    Example:
      sonar-bulk validate samples/customers.csv --kind customers --report issues.xlsx
    """
    from sonar_bulk import report as rp
    from sonar_bulk.schema import parse_map_option
    from sonar_bulk.sheets import read_sheet
    from sonar_bulk.validate import ValidateOptions, validate_sheet

    def run() -> int:
        try:
            mapping = parse_map_option(mappings)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if report_path is not None:
            rp.check_output_path(report_path, "--report")
        data = read_sheet(file, sheet=sheet, encoding=encoding, delimiter=delimiter)
        options = ValidateOptions(
            default_region=default_region.upper(),
            mapping=mapping,
            extra_columns=extra_columns,
            campaign_id=campaign_id,
            timezone=timezone,
        )
        try:
            result = validate_sheet(data, KINDS[kind_name], options)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if not quiet:
            click.echo(rp.human_summary(result, max_issues), err=True)
        if report_path is not None:
            rp.write_issues(result, report_path)
            if not quiet:
                click.echo(f"  report: {report_path}", err=True)
        if split:
            valid_path, invalid_path = rp.write_split(result)
            if not quiet:
                click.echo(
                    f"  split: {valid_path} ({result.valid_rows:,} rows), "
                    f"{invalid_path} ({result.invalid_rows:,} rows)",
                    err=True,
                )
        if as_json:
            rp.write_json(result, sys.stdout)
        return EXIT_INVALID if result.errors else EXIT_OK

    sys.exit(_guard(run, as_json))


@cli.command("template")
@click.argument("kind_name", metavar="KIND", type=click.Choice(list(KINDS)))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="File to write (.xlsx or .csv).",
)
def template_cmd(kind_name: str, output: Path) -> None:
    """Write a blank sheet of KIND to fill in: header, one example row and, in .xlsx,
    Text-formatted columns, drop-downs and an Instructions sheet.

    \b
    Example:
      sonar-bulk template customers -o customers.xlsx
    """
    from sonar_bulk.templates import write_template

    def run() -> int:
        if output.parent and not output.parent.exists():
            raise UsageError(f"{output}: folder {output.parent} does not exist")
        path = write_template(kind_name, output)
        click.echo(str(path))
        return EXIT_OK

    sys.exit(_guard(run, False))


def _guard(run: Any, as_json: bool) -> int:
    """Run a command body; turn every failure into one line on stderr and an exit code."""
    try:
        return int(run())
    except SonarBulkError as exc:
        _fail(str(exc), as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("sonar-bulk: interrupted", err=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), as_json)
        return EXIT_USAGE
    except Exception as exc:
        if os.environ.get("SONAR_BULK_DEBUG"):
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (set SONAR_BULK_DEBUG=1 for "
            "details, and please report it)",
            as_json,
        )
        return EXIT_INTERNAL


def _fail(message: str, as_json: bool) -> None:
    line = " ".join(message.split())
    click.echo(f"sonar-bulk: error: {line}", err=True)
    if as_json:
        click.echo(json.dumps({"error": line}))


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="sonar-bulk")
    except KeyboardInterrupt:
        click.echo("sonar-bulk: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
