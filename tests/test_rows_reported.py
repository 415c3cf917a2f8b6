"""Issue 18, point 9: rows reported as what really happened, against the real emulator over
loopback: ``properties set`` on a phone Sonar does not know creates the customer (reported
``created``, ``--existing-only`` skips it); a recipient who unsubscribed is skipped on reruns;
``messages tag`` reads a ``messages send`` results file and takes ``--tag``."""

from __future__ import annotations

from pathlib import Path

from sonar_bulk.emulator.server import EmulatorServer

from .test_bulk_cli import (
    bulk,
    customers_by_phone,
    customers_sheet,
    emu,  # noqa: F401 (a fixture)
    log,
    read_dicts,
    server,  # noqa: F401 (a fixture)
    us_numbers,
    write_sheet,
)

# -- properties set on a phone Sonar does not know --------------------------------------------


def _properties(path: Path, phones: list[str]) -> Path:
    rows = [[p, "plan", f"gold{i}"] for i, p in enumerate(phones)]
    return write_sheet(path, ["phone_number", "property_name", "value"], rows)


def test_properties_set_on_an_unknown_phone_reports_created(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    known, new = us_numbers(405, 2)
    assert (
        bulk(
            emu, "customers", "upsert", str(customers_sheet(tmp_path / "c.csv", [known]))
        ).exit_code
        == 0
    )
    sheet = _properties(tmp_path / "props.csv", [known, new])
    result = bulk(emu, "properties", "set", str(sheet))
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "props.results.csv")
    assert [(r["sonar__status"], r["sonar__http_status"]) for r in rows] == [
        ("ok", "200"),
        ("created", "201"),
    ]
    # Sonar sets properties through the upsert: the new phone is a customer now
    customers = customers_by_phone(emu)
    assert customers[new]["properties"] == {"plan": "gold1"}
    assert "1 created" in result.stderr and "1 ok" in result.stderr


def test_existing_only_skips_phones_sonar_does_not_know(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    known, new, other = us_numbers(406, 3)
    assert (
        bulk(
            emu, "customers", "upsert", str(customers_sheet(tmp_path / "c.csv", [known]))
        ).exit_code
        == 0
    )
    sheet = _properties(tmp_path / "props.csv", [known, new, other])

    planned = bulk(emu, "properties", "set", str(sheet), "--existing-only", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert {e["method"] for e in log(emu) if "customers" in e["path"]} >= {"GET"}
    assert "--existing-only: reading the current customers (GET only)" in planned.stderr
    plan = read_dicts(tmp_path / "props.plan.csv")
    assert [r["sonar__status"] for r in plan] == ["planned", "skipped", "skipped"]
    assert plan[1]["sonar__change"] == "skip: not a Sonar customer"

    before = {e["path"] for e in log(emu) if e["method"] == "POST"}
    result = bulk(emu, "properties", "set", str(sheet), "--existing-only")
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "props.results.csv")
    assert [r["sonar__status"] for r in rows] == ["ok", "skipped", "skipped"]
    assert rows[1]["sonar__error"] == (
        f"not sent: Sonar has no customer {new} (--existing-only leaves out customers it "
        "does not have)"
    )
    customers = customers_by_phone(emu)
    assert new not in customers and other not in customers  # nobody created
    assert customers[known]["properties"] == {"plan": "gold0"}
    posted = [e for e in log(emu) if e["method"] == "POST"]
    assert len(posted) == 1 + len(before)  # the known customer's upsert only
    assert "1 ok, 2 skipped" in result.stderr


def test_existing_only_is_for_properties_set(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = customers_sheet(tmp_path / "c.csv", us_numbers(407, 1))
    result = bulk(emu, "customers", "upsert", str(sheet), "--existing-only")
    assert result.exit_code == 2
    assert "No such option '--existing-only'" in result.output
    import sonar_bulk as sb
    from sonar_bulk.errors import UsageError

    try:
        sb.run("customers upsert", sheet, base_url=emu.api_url, token="t", existing_only=True)
    except UsageError as exc:
        assert "--existing-only applies to properties set" in str(exc)
    else:
        raise AssertionError("existing_only on customers upsert was accepted")
    assert log(emu) == []
