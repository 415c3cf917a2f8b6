"""`sonar-bulk api` end to end (Click's CliRunner against a real emulator on loopback): where a
call goes, what is refused before anything is sent, how a failure reads, and that the token is
never printed."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sonar_bulk import cli as cli_module
from sonar_bulk.api.endpoints import LIVE_BASE_URL, SANDBOX_BASE_URL, Errors
from sonar_bulk.api.transport import Transport
from sonar_bulk.cli import cli
from sonar_bulk.emulator.app import EmulatorConfig
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.errors import exit_codes_text

#: A token with characters that are percent-encoded in queries and form bodies.
TOKEN = "s3cret+tok/en"
PHONE = "+13105550101"


def token_forms() -> tuple[str, ...]:
    return (TOKEN, "s3cret%2Btok%2Fen", "s3cret%2Btok/en")


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(tokens={TOKEN: "valid"})) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> EmulatorServer:
    server.admin("POST", "/reset")
    return server


def api(*args: str, token: str | None = TOKEN) -> Result:
    env = {"SONAR_TOKEN": token} if token else {}
    return CliRunner().invoke(cli, ["api", *args], env=env)


def one_error_line(result: Result) -> str:
    """The single `sonar-bulk: error: ...` line a failure prints, with no traceback."""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sonar-bulk: error: ")
    assert "Traceback" not in result.output
    return result.stderr.removeprefix("sonar-bulk: error: ").rstrip("\n")


def assert_no_token(result: Result) -> None:
    for form in token_forms():
        assert form not in result.output


def requests(emu: EmulatorServer) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = emu.admin("GET", "/requests")
    return log


# --- -p with --json-body ----------------------------------------------------------------------


def test_params_with_a_json_body_is_a_usage_error(emu: EmulatorServer) -> None:
    result = api(
        "POST",
        "/customers",
        "--base-url",
        emu.api_url,
        "-p",
        f"phone_number={PHONE}",
        "--json-body",
        '{"first_name": "Ana"}',
    )
    assert result.exit_code == 2
    assert "-p and --json-body cannot be used together" in one_error_line(result)
    assert requests(emu) == []  # nothing was sent


# --- the path ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "with_param"),
    [
        ("/customers", True),
        ("customers", True),
        ("/api/v1/customers", True),
        ("{api}/customers", True),
        ("{api}/customers?phone_number=%2B13105550101", False),
        ("/api/v1/customers?phone_number=%2B13105550101", False),
    ],
)
def test_path_forms_reach_the_api_path(emu: EmulatorServer, path: str, with_param: bool) -> None:
    """An API path, the path with /api/v1, or the emulator's full URL: the same call."""
    emu.admin("POST", "/customers", {"phone_number": PHONE, "first_name": "Ana"})
    extra = ["-p", f"phone_number={PHONE}"] if with_param else []
    result = api("GET", path.format(api=emu.api_url), "--base-url", emu.api_url, *extra)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["first_name"] == "Ana"
    assert requests(emu)[-1]["path"] == "/api/v1/customers?phone_number=%2B13105550101"


@pytest.mark.parametrize("base", [LIVE_BASE_URL, SANDBOX_BASE_URL])
def test_a_sonar_url_under_emulate_is_answered_by_the_emulator(base: str) -> None:
    """A URL copied from the docs goes to the emulator (with the emulator's token)."""
    result = CliRunner().invoke(
        cli, ["api", "--emulate", "POST", f"{base}/customers", "-p", f"phone_number={PHONE}"]
    )
    assert result.exit_code == 0, result.output
    assert "using the emulator at http://127.0.0.1:" in result.stderr
    assert "201 Created" in result.stderr and json.loads(result.stdout)["phone_number"] == PHONE


def test_a_url_elsewhere_is_refused_before_the_token_is_sent(emu: EmulatorServer) -> None:
    """A URL whose host, port, scheme or path is not the base URL's is refused: the token only
    ever goes to the base URL."""
    with EmulatorServer(EmulatorConfig(tokens={TOKEN: "valid"})) as other:
        for url in [
            f"{other.api_url}/webhooks",  # another port
            f"{LIVE_BASE_URL}/webhooks",  # another host
            f"https://127.0.0.1:{emu.port}/api/v1/webhooks",  # another scheme
            f"{emu.url}/__emulator__/state",  # the same host, outside the API
        ]:
            result = api("GET", url, "--base-url", emu.api_url)
            assert result.exit_code == 2, (url, result.output)
            message = one_error_line(result)
            assert "is not under the base URL" in message and emu.api_url in message
            assert_no_token(result)
        assert requests(other) == []
    assert requests(emu) == []


def test_a_bad_base_url_is_a_usage_error() -> None:
    result = api("GET", "/webhooks", "--base-url", "localhost:8787/api/v1")
    assert result.exit_code == 2
    assert "expected http(s)://host[:port]/api/v1" in one_error_line(result)


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        (LIVE_BASE_URL, "/customers", f"{LIVE_BASE_URL}/customers"),
        (LIVE_BASE_URL, "customers/close", f"{LIVE_BASE_URL}/customers/close"),
        (LIVE_BASE_URL, "/api/v1/customers", f"{LIVE_BASE_URL}/customers"),
        (LIVE_BASE_URL, "/api/v1", f"{LIVE_BASE_URL}/"),
        (LIVE_BASE_URL, "/api/v10", f"{LIVE_BASE_URL}/api/v10"),  # whole segments only
        (LIVE_BASE_URL, "//elsewhere.example/x", f"{LIVE_BASE_URL}/elsewhere.example/x"),
        (LIVE_BASE_URL, "HTTPS://WWW.SendSonar.com:443/api/v1/a?b=1", f"{LIVE_BASE_URL}/a?b=1"),
        ("http://h:81/sonar/api/v1", "/api/v1/a", "http://h:81/sonar/api/v1/a"),
        ("http://h:81/sonar/api/v1", "/sonar/api/v1/a", "http://h:81/sonar/api/v1/a"),
        ("http://h:81", "/api/v1/a", "http://h:81/api/v1/a"),
    ],
)
def test_api_url(base: str, path: str, expected: str) -> None:
    from sonar_bulk.api.endpoints import api_url

    assert api_url(base, path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "http://www.sendsonar.com/api/v1/customers",
        "https://www.sendsonar.com:8443/api/v1/customers",
        "https://sandbox.sendsonar.com/api/v1/customers",
        "https://www.sendsonar.com.evil.example/api/v1/customers",
        "https://www.sendsonar.com/api/v2/customers",
        "https://user:pw@evil.example/api/v1/customers",
        "https://www.sendsonar.com:notaport/api/v1",
    ],
)
def test_api_url_refuses_other_places(path: str) -> None:
    from sonar_bulk.api.endpoints import api_url

    with pytest.raises(ValueError) as caught:
        api_url(LIVE_BASE_URL, path)
    assert "pw" not in str(caught.value)


# --- no answer --------------------------------------------------------------------------------


def test_a_refused_connection_is_exit_3_naming_the_url() -> None:
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = api(
            "GET", f"/webhooks?token={TOKEN}", "--base-url", f"http://127.0.0.1:{port}/api/v1"
        )
    assert result.exit_code == cli_module.EXIT_UNREACHABLE == 3
    message = one_error_line(result)
    assert message.startswith(
        f"could not reach the API at http://127.0.0.1:{port}/api/v1/webhooks: "
    )
    assert result.stdout == ""
    assert_no_token(result)


def test_a_connection_reset_before_an_answer_is_exit_3(emu: EmulatorServer) -> None:
    emu.admin("POST", "/faults", {"fault": "reset_before", "path": "/api/v1/webhooks"})
    result = api("GET", "/webhooks", "--base-url", emu.api_url)
    assert result.exit_code == 3
    message = one_error_line(result)
    assert message.startswith(f"the connection to {emu.api_url}/webhooks failed before an answer")
    assert message.endswith("the request may have been processed")
    assert_no_token(result)


def test_a_timeout_is_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 30-second read timeout (a narrow corner: simulated, not waited for; a real one is
    in tests/test_transport.py)."""
    import httpx

    async def time_out(*args: Any, **kwargs: Any) -> httpx.Response:
        raise httpx.ReadTimeout(f"timed out, token={TOKEN}")

    monkeypatch.setattr(Transport, "exchange", time_out)
    result = api("POST", "/messages", "--base-url", "http://127.0.0.1:9/api/v1", "-p", "to=1")
    assert result.exit_code == 3
    message = one_error_line(result)
    assert message.startswith("no answer from http://127.0.0.1:9/api/v1/messages within 30 s")
    assert_no_token(result)


def test_the_exit_codes_are_documented_from_the_enum() -> None:
    assert exit_codes_text() in (cli_module.__doc__ or "")
    assert "3   no answer from the API" in exit_codes_text()
    result = CliRunner().invoke(cli, ["--help"])
    assert "3 no answer from the API" in " ".join(result.output.split())
    result = CliRunner().invoke(cli, ["api", "--help"])
    assert "3 when the API could not be reached" in " ".join(result.output.split())


# --- --emulate and --help ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["api", "--emulate", "GET", "/phone_numbers/available"],
        ["api", "GET", "/phone_numbers/available", "--emulate"],
        ["--emulate", "api", "GET", "/phone_numbers/available"],
    ],
)
def test_emulate_before_or_after_the_subcommand(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"available_number": "7573780424"}
    assert "using the emulator at http://127.0.0.1:" in result.stderr


def test_help_says_the_default_is_the_live_api() -> None:
    result = CliRunner().invoke(cli, ["api", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert (
        f"else the LIVE Sonar API {LIVE_BASE_URL}; use --emulate or --base-url to avoid it" in text
    )
    assert "--emulate" in text and SANDBOX_BASE_URL in text


# --- the token is never printed ---------------------------------------------------------------


def test_an_answer_that_echoes_the_token_is_redacted(emu: EmulatorServer) -> None:
    result = api(
        "POST",
        "/customers",
        "--base-url",
        emu.api_url,
        "-p",
        f"phone_number={PHONE}",
        "-p",
        f"first_name={TOKEN}",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["first_name"] == "[REDACTED]"
    assert_no_token(result)


def test_no_token_is_a_usage_error(emu: EmulatorServer) -> None:
    result = api("GET", "/webhooks", "--base-url", emu.api_url, token=None)
    assert result.exit_code == 2 and "SONAR_TOKEN" in one_error_line(result)
    assert requests(emu) == []


def test_a_non_2xx_answer_is_exit_1(emu: EmulatorServer) -> None:
    result = api("GET", "/customers", "--base-url", emu.api_url, "-p", f"phone_number={PHONE}")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": Errors.CUSTOMER_NOT_FOUND}


# --- one redaction, one default token -----------------------------------------------------------


def test_redact_covers_every_form_of_a_secret() -> None:
    from sonar_bulk.api.endpoints import redact, secret_forms

    text = f"raw {TOKEN} query token=abc&x=1 form s3cret%2Btok%2Fen plus s3cret%2Btok/en TOKEN=zz"
    out = redact(text, secret_forms(TOKEN, None, ""))
    assert out == (
        "raw [REDACTED] query token=[REDACTED]&x=1 form [REDACTED] plus [REDACTED] TOKEN=[REDACTED]"
    )
    assert redact("nothing to hide", secret_forms(TOKEN)) == "nothing to hide"


def test_the_emulator_log_redacts_an_encoded_token(emu: EmulatorServer) -> None:
    """The request log uses the same redaction: a token percent-encoded in a form body or a
    query is gone too."""
    response = emu.client.post(
        emu.api_url + "/customers",
        params={"token": TOKEN},
        data={"phone_number": PHONE, "note": TOKEN},
    )
    assert response.status_code == 201
    text = json.dumps(requests(emu))
    assert "[REDACTED]" in text
    for form in token_forms():
        assert form not in text


def test_one_default_emulator_token() -> None:
    from sonar_bulk.api.endpoints import EMULATOR_PUBLISHABLE_KEY, EMULATOR_TOKEN

    assert EmulatorConfig().tokens == {EMULATOR_TOKEN: "valid"}
    assert EmulatorConfig().publishable_keys == (EMULATOR_PUBLISHABLE_KEY,)
    built = cli_module.emulator_config()
    assert built.tokens == {EMULATOR_TOKEN: "valid"}
    assert built.publishable_keys == (EMULATOR_PUBLISHABLE_KEY,)
    text = re.sub(
        r"-\s+", "-", " ".join(CliRunner().invoke(cli, ["emulator", "--help"]).output.split())
    )
    assert f"Default: {EMULATOR_TOKEN}." in text and f"Default: {EMULATOR_PUBLISHABLE_KEY}." in text


# --- one client ----------------------------------------------------------------------------------


def test_the_call_goes_through_the_one_client(
    emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`api` makes its call with SonarClient.request, like every other command."""
    from sonar_bulk.api.client import SonarClient

    calls: list[tuple[str, str]] = []
    original = SonarClient.request

    async def spy(self: SonarClient, method: str, path: str, **kwargs: Any) -> Any:
        calls.append((method, path))
        return await original(self, method, path, **kwargs)

    monkeypatch.setattr(SonarClient, "request", spy)
    result = api("GET", "/webhooks", "--base-url", emu.api_url)
    assert result.exit_code == 0, result.output
    assert calls == [("GET", "/webhooks")]


def test_a_base_url_under_emulate_is_answered_by_the_emulator() -> None:
    base = "http://sonar.internal.example:8080/api/v1"
    result = CliRunner().invoke(
        cli, ["api", "--emulate", "--base-url", base, "GET", f"{base}/phone_numbers/available"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"available_number": "7573780424"}


def test_form_params_keep_their_grouping(emu: EmulatorServer) -> None:
    """Repeated keys are sent together, in the order first given (as the gem sends them)."""
    result = api(
        "POST",
        "/messages",
        "--base-url",
        emu.api_url,
        "-p",
        "tag_names[]=x",
        "-p",
        f"to={PHONE}",
        "-p",
        "tag_names[]=y",
        "-p",
        "text=hi",
    )
    assert result.exit_code == 0, result.output
    (message,) = emu.admin("GET", "/state")["messages"]
    assert message["tags"] == ["x", "y"] and message["text"] == "hi"
