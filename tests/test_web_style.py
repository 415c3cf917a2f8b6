"""The page's stylesheet is designed, not grown: a type scale, a spacing scale and a palette
declared once as tokens, every text colour at least 4.5:1 against each background it is drawn on
(WCAG 2 AA), focus rings at least 3:1, and no framework. axe-core checks the same contrast on the
rendered page at every step (tests/test_web_browser.py); this test checks the palette itself,
including states a browser test may not reach (a failed row, a disabled step)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

CSS = (ROOT / "sonar_bulk" / "web" / "static" / "style.css").read_text(encoding="utf-8")
ROOT_BLOCK = re.search(r":root\s*\{(.*?)\n\}", CSS, re.S)
assert ROOT_BLOCK is not None
TOKENS = dict(re.findall(r"--([\w-]+):\s*([^;]+);", ROOT_BLOCK.group(1)))
RULES = CSS[ROOT_BLOCK.end() :]

#: Every (text, background) pair of tokens the stylesheet draws text with.
TEXT_ON = [
    ("ink", "paper"), ("ink", "canvas"), ("ink", "soft"), ("ink", "err-bg"), ("ink", "warn-bg"),
    ("ink-2", "paper"), ("ink-2", "soft"), ("ink-2", "err-bg"), ("ink-2", "warn-bg"),
    ("ink-2", "line"),
    ("muted", "paper"), ("muted", "canvas"), ("muted", "soft"),
    ("accent", "paper"), ("accent", "soft"), ("accent", "accent-soft"), ("accent", "err-bg"),
    ("accent", "warn-bg"), ("accent-hover", "accent-soft"), ("accent-hover", "paper"),
    ("accent-ink", "accent"), ("accent-ink", "accent-hover"), ("accent-ink", "err"),
    ("accent-ink", "err-hover"),
    ("err", "paper"), ("err", "err-bg"), ("warn", "paper"), ("warn", "warn-bg"),
    ("ok", "ok-bg"),
]  # fmt: skip


def luminance(colour: str) -> float:
    """Relative luminance of a #rrggbb colour (WCAG 2)."""
    match = re.fullmatch(r"#([0-9a-fA-F]{6})", colour.strip())
    assert match, f"not a #rrggbb colour: {colour}"
    channels = [int(match.group(1)[k : k + 2], 16) / 255 for k in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_contrast_formula_is_wcag_s() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)  # the known AA edge


@pytest.mark.parametrize(("text", "background"), TEXT_ON, ids=[f"{t}-on-{b}" for t, b in TEXT_ON])
def test_every_text_colour_reads_at_4_5_to_1_on_its_backgrounds(text: str, background: str) -> None:
    ratio = contrast(TOKENS[text], TOKENS[background])
    assert ratio >= 4.5, f"--{text} on --{background}: {ratio:.2f}:1"


@pytest.mark.parametrize("background", ["paper", "canvas", "soft", "err-bg", "accent-soft"])
def test_focus_rings_and_control_borders_stand_out(background: str) -> None:
    assert contrast(TOKENS["focus"], TOKENS[background]) >= 3.0  # WCAG 1.4.11, non-text
    assert contrast(TOKENS["line-strong"], TOKENS[background]) >= 3.0  # a field's border


def test_every_text_pair_used_in_the_rules_is_one_checked_above() -> None:
    """A rule that sets both a colour and a background uses a pair of tokens checked above."""
    checked = set(TEXT_ON)
    for body in re.findall(r"\{([^{}]*)\}", RULES):
        colour = re.search(r"(?<![-\w])color:\s*var\(--([\w-]+)\)", body)
        background = re.search(r"background:\s*var\(--([\w-]+)\)", body)
        if colour and background:
            pair = (colour.group(1), background.group(1))
            assert pair in checked, f"unchecked pair {pair} in {{{body.strip()}}}"


def test_colours_sizes_and_spacing_come_from_the_tokens() -> None:
    assert not re.findall(r"#[0-9a-fA-F]{3,8}\b|rgba?\(", RULES)  # colours: tokens only
    for size in re.findall(r"font-size:\s*([^;}]+)", RULES):
        assert size.strip().startswith("var(--text-"), size  # the type scale only
    scale = {k for k in TOKENS if k.startswith("text-")}
    assert {"text-xs", "text-sm", "text-md", "text-lg", "text-xl"} <= scale
    steps = [float(TOKENS[f"sp-{n}"].removesuffix("rem")) for n in range(1, 7)]
    assert steps == sorted(steps) and all(s * 16 % 4 == 0 for s in steps)  # a 4 px grid
    assert len(re.findall(r"var\(--sp-\d\)", RULES)) > 50  # and the rules use it


def test_focus_is_visible_on_everything_that_takes_it_and_there_is_no_framework() -> None:
    assert re.search(r"^:focus-visible\s*\{[^}]*outline:\s*3px solid var\(--focus\)", RULES, re.M)
    # only what the page focuses for screen readers goes without a ring (no control does)
    assert RULES.count("outline: none") == 1 and '[tabindex="-1"]:focus { outline: none; }' in RULES
    assert "@import" not in CSS and "url(" not in CSS  # nothing fetched, no framework
    html = (ROOT / "sonar_bulk" / "web" / "static" / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<link[^>]*stylesheet[^>]*>", html) == [
        '<link rel="stylesheet" href="/static/style.css">'
    ]
