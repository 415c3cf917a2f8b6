"""The web page in Firefox (Debian's ``firefox-esr``), driven over WebDriver BiDi, Firefox's own
remote protocol (Playwright drives only its own Firefox build, which can't be installed here).
What differs between engines: the page's modules load, the grid draws its rows with each issue
on its cell, a cell edited from the keyboard is checked again, and the steps flow from the sheet
to the results (a plan, a run against the emulator), each step fitting a 1,280 x 800 window
with no serious or critical axe-core violation (axe-core's script, as the
``axe-playwright-python`` package bundles it, is run in the page over BiDi).

Skips without Firefox or the ``websockets`` package (the test extras bring it), unless
``SONAR_BULK_REQUIRE_BROWSER`` is set (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES
from tests.web_helpers import Page

FIREFOX = os.environ.get("SONAR_BULK_FIREFOX") or shutil.which("firefox-esr") or ""
WHY = "no Firefox: apt-get install firefox-esr (and the test extras, for websockets)"

try:
    import websockets
except ImportError:  # pragma: no cover - the test extras bring it
    websockets = None  # type: ignore[assignment]

if (websockets is None or not FIREFOX) and os.environ.get("SONAR_BULK_REQUIRE_BROWSER"):
    raise RuntimeError(WHY)
pytestmark = pytest.mark.skipif(websockets is None or not FIREFOX, reason=WHY)

#: Quiet preferences for a browser on a closed network.
PREFS = """
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("app.update.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("extensions.update.enabled", false);
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The serious and critical violations axe-core finds on the page as it is, one line each.
AXE_RUN = (
    "axe.run(document).then(r => JSON.stringify(r.violations"
    ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
    ".map(v => v.id + ' (' + v.impact + '): ' + v.help + ': '"
    " + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join('; '))))"
)


def axe_source() -> str:
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


class Bidi:
    """A minimal WebDriver BiDi client: commands and their answers, each with a timeout."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.next_id = 0

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        wanted = self.next_id
        await self.connection.send(json.dumps({"id": wanted, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.connection.recv(), 30))
            if message.get("id") == wanted:
                if "error" in message:
                    raise AssertionError(f"{method}: {message}")
                result: dict[str, Any] = message["result"]
                return result

    async def js(self, context: str, expression: str) -> Any:
        answer = await self.call(
            "script.evaluate",
            {"expression": expression, "target": {"context": context}, "awaitPromise": True},
        )
        assert answer.get("type") == "success", answer
        return answer["result"].get("value")

    async def until(self, context: str, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(context, expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"never true: {expression}"
            await asyncio.sleep(0.05)


def test_the_page_works_in_firefox(page: Page, tmp_path: Path) -> None:
    import base64

    data = base64.b64encode((SAMPLES / "customers.messy.csv").read_bytes()).decode()
    assert page.client.post("/api/upload", json={"name": "messy.csv", "data": data}).is_success
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "user.js").write_text(PREFS)
    port = free_port()
    firefox = subprocess.Popen(
        [
            FIREFOX,
            "--headless",
            "--no-remote",
            "--profile",
            str(profile),
            "--remote-debugging-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(tmp_path), "MOZ_HEADLESS": "1"},
    )

    async def drive() -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = await websockets.connect(
                    f"ws://127.0.0.1:{port}/session", max_size=2**24, open_timeout=5
                )
                break
            except OSError:
                assert time.monotonic() < deadline, "Firefox never listened"
                await asyncio.sleep(0.2)
        async with connection:
            bidi = Bidi(connection)
            await bidi.call("session.new", {"capabilities": {}})
            tree = await bidi.call("browsingContext.getTree", {})
            context = tree["contexts"][0]["context"]
            await bidi.call(
                "browsingContext.navigate",
                {"context": context, "url": page.launch, "wait": "complete"},
            )
            seen: dict[str, Any] = {}
            seen["agent"] = await bidi.js(context, "navigator.userAgent")
            await bidi.until(context, "document.querySelectorAll('[aria-invalid=true]').length")
            # a reload of an uploaded sheet comes back at its Columns step: on to Review
            await bidi.js(context, "document.querySelector('#steps [data-step=\"2\"]').click()")
            seen["step"] = await bidi.until(
                context, "!document.getElementById('step-review').hidden && 'review'"
            )
            seen["counts"] = await bidi.js(context, "document.getElementById('counts').textContent")
            seen["rows"] = await bidi.js(context, "document.querySelectorAll('[role=row]').length")
            described = await bidi.js(
                context,
                "(() => { const c = [...document.querySelectorAll('[role=gridcell]')].find("
                "e => e.querySelector('.text')?.textContent === 'maybe');"
                " const d = document.getElementById(c.getAttribute('aria-describedby'));"
                " c.click(); return d.textContent; })()",
            )
            seen["description"] = described
            keys = [
                action
                for key in ["y", "e", "s", "\ue007"]
                for action in ({"type": "keyDown", "value": key}, {"type": "keyUp", "value": key})
            ]
            await bidi.call(
                "input.performActions",
                {"context": context, "actions": [{"type": "key", "id": "kb", "actions": keys}]},
            )
            seen["edited"] = await bidi.until(
                context,
                "(() => { const row = [...document.querySelectorAll('[role=row]')].find("
                "r => r.querySelector('[role=rowheader]')?.textContent === '4');"
                " const c = row && row.querySelector('[aria-colindex=\"6\"]');"
                " return c && c.querySelector('.text')?.textContent === 'yes'"
                " && !c.hasAttribute('aria-invalid') ? 'yes, and valid' : ''; })()",
            )
            seen["error"] = await bidi.js(context, "document.getElementById('error').textContent")
            # the page is never wider than a 1,280 x 800 window, at every step it can reach
            await bidi.call(
                "browsingContext.setViewport",
                {"context": context, "viewport": {"width": 1280, "height": 800}},
            )
            widths: dict[str, int] = {}
            violations: dict[str, list[str]] = {}
            source = axe_source()

            async def check(where: str) -> None:
                widths[where] = await bidi.js(context, "document.documentElement.scrollWidth")
                if not await bidi.js(context, "typeof axe !== 'undefined'"):
                    await bidi.js(context, source + "; true")
                violations[where] = json.loads(await bidi.js(context, AXE_RUN))

            async def step(number: int) -> str:
                button = f"document.querySelector('#steps [data-step=\"{number}\"]')"
                await bidi.js(context, f"{button}.click()")
                await bidi.until(context, f"{button}.getAttribute('aria-current') === 'step'")
                return str(await bidi.js(context, f"{button}.textContent"))

            for number in range(4):  # Sheet, Columns, Review, Plan: all reachable now
                await check(await step(number))
            # the check itself: an input with no label is one axe-core calls critical
            await bidi.js(
                context, "document.querySelector('main').append(document.createElement('input'))"
            )
            seen["probe"] = json.loads(await bidi.js(context, AXE_RUN))
            await bidi.js(context, "document.querySelector('main > input:last-child').remove()")
            # the steps flow on in Firefox: a plan, the run it allows, the results
            await bidi.js(context, "document.getElementById('skip-invalid').click()")
            await bidi.js(context, "document.getElementById('dry-run').click()")
            await bidi.until(context, "document.querySelectorAll('#plan-body tr').length === 7")
            seen["plan"] = await bidi.js(context, "document.getElementById('plan').textContent")
            await check("4. Plan, planned")
            await bidi.js(context, "document.getElementById('next').click()")
            await bidi.until(context, "!document.getElementById('step-run').hidden")
            await check("5. Run")
            await bidi.js(context, "document.getElementById('run').click()")
            await bidi.until(context, "document.getElementById('confirm').open")
            await check("5. Run, the confirmation")
            await bidi.js(context, "document.getElementById('confirm-yes').click()")
            await bidi.until(
                context,
                "!document.getElementById('step-results').hidden"
                " && document.querySelectorAll('#results-body tr').length === 7",
            )
            seen["results"] = await bidi.js(
                context, "document.getElementById('result-counts').textContent"
            )
            await check("6. Results")
            seen["widths"] = widths
            seen["violations"] = violations
            return seen

    try:
        seen = asyncio.run(asyncio.wait_for(drive(), 120))
    finally:
        firefox.kill()
        firefox.wait(10)
    assert "Firefox/" in seen["agent"]
    assert seen["step"] == "review"
    assert seen["counts"].startswith("7 rows · 3 valid · 4 invalid")
    assert 2 <= seen["rows"] < 50  # the header and the sheet's rows, drawn by the module
    assert seen["description"].startswith("not an SMS-consent value")
    assert seen["error"] == ""
    assert seen["edited"] == "yes, and valid"  # typed over from the keyboard, checked again
    assert "3 rows of 7 to send" in seen["plan"] and "Nothing was sent" in seen["plan"]
    assert seen["results"] == "Done: 2 created, 1 updated, 4 invalid"
    assert len(page.emulator.admin("GET", "/state")["customers"]) == 2
    assert len(seen["widths"]) == 8, seen["widths"]  # every step, and the confirmation
    assert all(width <= 1280 for width in seen["widths"].values()), seen["widths"]
    assert any(v.startswith("label (critical)") for v in seen["probe"]), seen["probe"]
    assert seen["violations"] == dict.fromkeys(seen["widths"], []), seen["violations"]
