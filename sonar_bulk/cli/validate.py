"""``validate`` and ``template``: check a sheet before anything touches the API, and write a
blank one to fill in."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sonar_bulk.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    _kinds_help,
    allow_blank_merge_option,
    cli,
    default_send_time_option,
    guard,
    input_options,
    json_option,
    print_json,
    stdout,
)
from sonar_bulk.errors import UsageError
from sonar_bulk.schema import KINDS


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
@default_send_time_option("campaign_recipients: ")
@allow_blank_merge_option("messages: ")
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Write the issues to this .csv or .xlsx file.",
)
@click.option(
    "--split",
    is_flag=True,
    help="Write <stem>.valid.<ext> and <stem>.invalid.<ext> beside the input.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a --report or --split file that sonar-bulk did not write.",
)
@click.option(
    "--max-issues",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="N",
    help="Issues shown in the summary.",
)
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def validate_cmd(
    file: Path,
    kind_name: str,
    sheet: str | None,
    header_row: int | None,
    encoding: str | None,
    delimiter: str | None,
    mappings: tuple[str, ...],
    default_region: str,
    extra_columns: str,
    campaign_id: str | None,
    timezone: str | None,
    default_send_time: str | None,
    allow_blank_merge: bool,
    report_path: Path | None,
    as_json: bool,
    split: bool,
    max_issues: int,
    quiet: bool,
    force: bool,
) -> None:
    """Check every row of FILE before anything touches the API (a dry run).

    Reports each problem with its row (as Excel numbers it, header = row 1), column, value, a
    stable code and how to fix it. Exit 0 when no row has an error, 1 otherwise.

    \b
    Example:
      sonar-bulk validate samples/customers.csv --kind customers --report issues.xlsx
    """
    from sonar_bulk import normalize as nz
    from sonar_bulk import report as rp
    from sonar_bulk.issues import ISSUE_COLUMNS
    from sonar_bulk.outputs import check_output_path
    from sonar_bulk.schema import parse_map_option
    from sonar_bulk.sheets import read_sheet
    from sonar_bulk.validation import ValidateOptions, validate_sheet

    def run() -> int:
        try:
            mapping = parse_map_option(mappings)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if report_path is not None:
            if file.exists() and report_path.exists() and report_path.samefile(file):
                raise UsageError(f"--report {report_path}: that is the input file")
            if split and report_path.resolve() in {p.resolve() for p in rp.split_paths(file)}:
                raise UsageError(f"--report {report_path}: that is where --split writes")
            check_output_path(report_path, "--report", force=force, ours=ISSUE_COLUMNS)
        data = read_sheet(
            file, sheet=sheet, encoding=encoding, delimiter=delimiter, header_row=header_row
        )
        options = ValidateOptions(
            default_region=default_region.upper(),
            mapping=mapping,
            extra_columns=extra_columns,
            campaign_id=campaign_id,
            timezone=timezone,
            default_send_time=default_send_time,
            allow_blank_merge=allow_blank_merge,
        )
        try:
            result = validate_sheet(data, KINDS[kind_name], options)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if split:
            rp.check_split(result, force=force)
        if not quiet:
            click.echo(rp.human_summary(result, max_issues), err=True)
        if report_path is not None:
            rp.write_issues(result, report_path)
            if not quiet:
                click.echo(f"  report: {report_path}", err=True)
        split_paths: dict[str, str] | None = None
        if split:
            valid_path, invalid_path = rp.write_split(result)
            split_paths = {"valid": str(valid_path), "invalid": str(invalid_path)}
            if not quiet:
                click.echo(
                    f"  split: {valid_path} ({nz.plural(result.valid_rows, 'row')}), "
                    f"{invalid_path} ({nz.plural(result.invalid_rows, 'row')})",
                    err=True,
                )
        code = EXIT_INVALID if result.errors else EXIT_OK
        if as_json:
            facts = {
                "report": None if report_path is None else str(report_path),
                "split": split_paths,
                "exit_code": code,
            }
            with stdout() as out:
                rp.write_json(result, out, facts)
        return code

    sys.exit(guard(run, as_json))


@cli.command("template")
@click.argument("kind_name", metavar="KIND", type=click.Choice(list(KINDS)))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="File to write (.xlsx or .csv).",
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@json_option
def template_cmd(kind_name: str, output: Path, force: bool, as_json: bool) -> None:
    """Write a blank sheet of KIND to fill in: header, one example row and, in .xlsx,
    Text-formatted columns, drop-downs and an Instructions sheet.

    The example row is there to show the format: replace or delete it (validate reports it as
    row.example, so it is never sent by mistake). An existing file is never replaced without
    --force.

    \b
    Example:
      sonar-bulk template customers -o customers.xlsx
    """
    from sonar_bulk.outputs import check_output_path
    from sonar_bulk.owned import Written
    from sonar_bulk.templates import write_template

    def run() -> int:
        check_output_path(output, "template", force=force, noted=True)
        path = write_template(kind_name, output)
        Written().note(path)
        if as_json:
            doc = {"command": "template", "kind": kind_name, "output": str(path)}
            print_json({**doc, "exit_code": EXIT_OK})
        else:
            click.echo(str(path))
        return EXIT_OK

    sys.exit(guard(run, as_json))
