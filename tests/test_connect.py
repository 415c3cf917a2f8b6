"""`sonar-bulk connect` and `sonar-bulk emulator-reset` end to end (Click's CliRunner against
a real emulator on loopback): a token is checked before it is saved, saved 0600, never
printed, and then used by `api --profile`; flags beat the profile."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette

from sonar_bulk import connection
from sonar_bulk.api.endpoints import LIVE_BASE_URL, SANDBOX_BASE_URL, Errors, secret_forms
from sonar_bulk.cli import cli
from sonar_bulk.cli import connect as connect_module
from sonar_bulk.emulator.app import EmulatorConfig
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.errors import ExitCode
from sonar_bulk.serving import ThreadedServer

#: Tokens with characters that are percent-encoded in a query.
GOOD = "g00d+tok/en-1234"
BAD = "b4d+tok/en-5678"
NO_SUBSCRIPTION = "n0sub+tok/en-9"
API_DISABLED = "0ff+tok/en-42"
PHONE = "+13105550101"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    tokens: dict[str, Any] = {
        GOOD: "valid",
        NO_SUBSCRIPTION: "no_subscription",
        API_DISABLED: "api_disabled",
    }
    with EmulatorServer(EmulatorConfig(tokens=tokens)) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> EmulatorServer:
    server.admin("POST", "/reset")
    return server


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


def connect(emu: EmulatorServer, token: str, *args: str) -> Result:
    return invoke("connect", "--base-url", emu.api_url, "--token", token, *args)


def one_error_line(result: Result) -> str:
    """The single `sonar-bulk: error: ...` line a failure prints, with no traceback."""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sonar-bulk: error: ")
    assert "Traceback" not in result.output
    return result.stderr.removeprefix("sonar-bulk: error: ").rstrip("\n")


def assert_no_secret(result: Result, *tokens: str) -> None:
    for form in secret_forms(*tokens):
        assert form not in result.output


def saved() -> Any:
    return json.loads(connection.profiles_path().read_text(encoding="utf-8"))


def requests(emu: EmulatorServer) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = emu.admin("GET", "/requests")
    return log


# --- a good token is checked, then saved ------------------------------------------------------


def test_connect_checks_the_token_then_saves_it_0600(emu: EmulatorServer) -> None:
    result = connect(emu, GOOD, "--profile", "staging")
    assert result.exit_code == 0, result.output
    path = connection.profiles_path()
    assert saved() == {"staging": {"base_url": emu.api_url, "token": GOOD}}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert str(path) in result.stdout and "'staging'" in result.stdout
    assert "g00…34" in result.stdout  # the masked form, at most
    assert_no_secret(result, GOOD)
    # the check is one harmless read
    (request,) = requests(emu)
    assert request["method"] == "GET"
    assert request["path"] == "/api/v1/customers?phone_number=%2B13105550100"
    assert emu.admin("GET", "/state")["customers"] == []


def test_the_token_comes_from_the_environment_and_the_profile_is_default(
    emu: EmulatorServer,
) -> None:
    result = invoke("connect", "--base-url", emu.api_url, env={"SONAR_TOKEN": GOOD})
    assert result.exit_code == 0, result.output
    assert saved() == {"default": {"base_url": emu.api_url, "token": GOOD}}
    assert_no_secret(result, GOOD)


def test_a_second_profile_keeps_the_first(emu: EmulatorServer) -> None:
    assert connect(emu, GOOD, "--profile", "one").exit_code == 0
    assert connect(emu, GOOD, "--profile", "two").exit_code == 0
    assert sorted(saved()) == ["one", "two"]
    assert stat.S_IMODE(os.stat(connection.profiles_path()).st_mode) == 0o600


def test_a_new_token_for_a_profile_keeps_its_base_url(emu: EmulatorServer) -> None:
    """Replacing a profile's token without --base-url or --sandbox checks it against the
    profile's API, not the live one."""
    connection.save_profile("staging", emu.api_url, "old-token")
    result = invoke("connect", "--profile", "staging", "--token", GOOD)
    assert result.exit_code == 0, result.output
    assert saved() == {"staging": {"base_url": emu.api_url, "token": GOOD}}
    assert len(requests(emu)) == 1


def test_the_token_is_asked_for_without_echo_in_a_terminal(
    emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connect_module, "_can_prompt", lambda: True)
    result = invoke("connect", "--base-url", emu.api_url, stdin=f"{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "Sonar token for" in result.stderr
    assert saved()["default"]["token"] == GOOD
    assert_no_secret(result, GOOD)


def test_no_token_and_no_terminal_is_exit_2(emu: EmulatorServer) -> None:
    result = invoke("connect", "--base-url", emu.api_url, stdin="")
    assert result.exit_code == 2
    assert "no token: pass --token or set SONAR_TOKEN" in one_error_line(result)
    assert not connection.profiles_path().exists()
    assert requests(emu) == []


# --- what is not saved --------------------------------------------------------------------------


def test_a_refused_token_is_not_saved(emu: EmulatorServer) -> None:
    result = connect(emu, BAD)
    assert result.exit_code == ExitCode.REFUSED
    message = one_error_line(result)
    assert message.startswith(f"the token was refused by {emu.api_url} (401 Unauthorized")
    assert Errors.TOKEN_NOT_FOUND in message and "nothing saved" in message
    assert not connection.profiles_path().exists()
    assert result.stdout == ""
    assert_no_secret(result, BAD)


def test_a_refused_token_leaves_a_saved_profile_alone(emu: EmulatorServer) -> None:
    assert connect(emu, GOOD).exit_code == 0
    assert connect(emu, BAD).exit_code == ExitCode.REFUSED
    assert saved() == {"default": {"base_url": emu.api_url, "token": GOOD}}


@pytest.mark.parametrize(
    ("token", "error"),
    [(NO_SUBSCRIPTION, Errors.NO_SUBSCRIPTION), (API_DISABLED, Errors.API_DISABLED)],
)
def test_an_account_that_cannot_use_the_api_is_reported(
    emu: EmulatorServer, token: str, error: str
) -> None:
    result = connect(emu, token, "--profile", "acct")
    assert result.exit_code == ExitCode.REFUSED
    message = one_error_line(result)
    assert "the account cannot use the API" in message and error in message
    assert "403" in message
    assert not connection.profiles_path().exists()
    assert_no_secret(result, token)


def test_an_unreachable_api_is_exit_3_and_nothing_is_saved() -> None:
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/api/v1"
        result = invoke("connect", "--base-url", url, "--token", GOOD)
    assert result.exit_code == 3
    assert one_error_line(result).startswith(f"could not reach the API at {url}/customers")
    assert not connection.profiles_path().exists()
    assert_no_secret(result, GOOD)


def test_a_404_that_is_not_the_sonar_api_is_not_saved() -> None:
    """A base URL that answers 404 to everything (a web site, not the API) proves nothing."""
    with ThreadedServer(Starlette()) as site:
        result = invoke("connect", "--base-url", f"{site.url}/api/v1", "--token", GOOD)
    assert result.exit_code == 1
    assert "not as the Sonar API does" in one_error_line(result)
    assert not connection.profiles_path().exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "two words"], "a name without spaces"),
        (["--sandbox", "--base-url", SANDBOX_BASE_URL], "pick one"),
        (["--base-url", "localhost:8787/api/v1"], "expected http(s)://host[:port]/api/v1"),
        (["--token", "a\nb"], "line break"),
    ],
)
def test_usage_errors_are_exit_2_before_anything_is_sent(args: list[str], message: str) -> None:
    token = [] if "--token" in args else ["--token", GOOD]
    base = [] if "--base-url" in args else ["--base-url", "http://127.0.0.1:9/api/v1"]
    result = invoke("connect", *base, *token, *args)
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)
    assert not connection.profiles_path().exists()


@pytest.mark.parametrize("where", ["global", "command"])
def test_connect_under_emulate_checks_the_emulator_and_saves_nothing(where: str) -> None:
    args = ["--emulate", "connect"] if where == "global" else ["connect", "--emulate"]
    result = invoke(*args, "--token", BAD)
    assert result.exit_code == 0, result.output
    assert "using the emulator at http://127.0.0.1:" in result.stderr
    assert "the emulator accepted its token" in result.stdout and "nothing saved" in result.stdout
    assert not connection.profiles_path().exists()


# --- a saved profile is used by the other commands -----------------------------------------------


def test_api_uses_a_saved_profile(emu: EmulatorServer) -> None:
    assert connect(emu, GOOD, "--profile", "staging").exit_code == 0
    emu.admin("POST", "/customers", {"phone_number": PHONE, "first_name": "Ana"})
    result = invoke(
        "api", "GET", "/customers", "-p", f"phone_number={PHONE}", "--profile", "staging"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["first_name"] == "Ana"
    assert requests(emu)[-1]["path"] == "/api/v1/customers?phone_number=%2B13105550101"
    assert_no_secret(result, GOOD)
    # SONAR_PROFILE names it too
    result = invoke(
        "api", "GET", "/customers", "-p", f"phone_number={PHONE}", env={"SONAR_PROFILE": "staging"}
    )
    assert result.exit_code == 0, result.output


def test_api_uses_the_default_profile_when_no_token_is_given(emu: EmulatorServer) -> None:
    assert connect(emu, GOOD).exit_code == 0
    result = invoke("api", "GET", "/webhooks")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert requests(emu)[-1]["path"] == "/api/v1/webhooks"


def test_a_token_flag_or_variable_beats_the_profile(emu: EmulatorServer) -> None:
    assert connect(emu, GOOD, "--profile", "staging").exit_code == 0
    for how in (["--token", BAD], []):
        env = {} if how else {"SONAR_TOKEN": BAD}
        result = invoke("api", "GET", "/webhooks", "--profile", "staging", *how, env=env)
        assert result.exit_code == ExitCode.REFUSED, result.output  # BAD was sent, not staging's
        assert json.loads(result.stdout) == {"error": Errors.TOKEN_NOT_FOUND}
        assert_no_secret(result, GOOD, BAD)


def test_a_base_url_flag_beats_the_profile(emu: EmulatorServer) -> None:
    connection.save_profile("elsewhere", "http://127.0.0.1:9/api/v1", GOOD)
    result = invoke("api", "GET", "/webhooks", "--profile", "elsewhere", "--base-url", emu.api_url)
    assert result.exit_code == 0, result.output
    assert requests(emu)[-1]["path"] == "/api/v1/webhooks"


def test_an_unknown_profile_is_exit_2(emu: EmulatorServer) -> None:
    assert connect(emu, GOOD, "--profile", "staging").exit_code == 0
    result = invoke("api", "GET", "/webhooks", "--profile", "nope")
    assert result.exit_code == 2
    message = one_error_line(result)
    assert message.startswith("no profile 'nope' (saved: staging)")
    assert "sonar-bulk connect --profile nope" in message
    assert requests(emu)[-1]["path"].startswith("/api/v1/customers")  # only connect's check


def test_api_sandbox_flag_names_the_sandbox() -> None:
    """--sandbox is the base URL: a URL elsewhere is refused naming it (nothing is sent)."""
    result = invoke("api", "GET", f"{LIVE_BASE_URL}/webhooks", "--sandbox", "--token", GOOD)
    assert result.exit_code == 2
    assert f"is not under the base URL {SANDBOX_BASE_URL}" in one_error_line(result)
    result = invoke("api", "GET", "/webhooks", "--sandbox", "--base-url", SANDBOX_BASE_URL)
    assert result.exit_code == 2 and "pick one" in one_error_line(result)


# --- the world --emulate keeps, and emulator-reset ---------------------------------------------


def test_emulate_keeps_its_world_until_emulator_reset() -> None:
    state = connection.emulator_state_path()
    assert not state.exists()
    upsert = invoke("--emulate", "api", "POST", "/customers", "-p", f"phone_number={PHONE}")
    assert upsert.exit_code == 0, upsert.output
    assert str(state) in upsert.stderr and state.exists()
    get = ["api", "--emulate", "GET", "/customers", "-p", f"phone_number={PHONE}"]
    found = invoke(*get)
    assert found.exit_code == 0 and json.loads(found.stdout)["phone_number"] == PHONE

    result = invoke("emulator-reset")
    assert result.exit_code == 0, result.output
    assert str(state) in result.stdout and "forgot" in result.stdout
    assert not state.exists()
    gone = invoke(*get)
    assert gone.exit_code == 1
    assert json.loads(gone.stdout) == {"error": Errors.CUSTOMER_NOT_FOUND}


def test_emulator_reset_with_nothing_kept_is_fine() -> None:
    result = invoke("emulator-reset")
    assert result.exit_code == 0
    assert "no emulated world to forget" in result.stdout
    assert str(connection.emulator_state_path()) in result.stdout


def test_the_user_folders_are_the_tests_own(private_user_dirs: Any) -> None:
    """The autouse fixture keeps every test away from the real home."""
    assert connection.profiles_path().is_relative_to(private_user_dirs)
    assert connection.emulator_state_path().is_relative_to(private_user_dirs)
