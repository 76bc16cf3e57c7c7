"""The reading site in a real browser: headless Chromium (the distribution's package, e.g. Debian's
`chromium`) driven by Playwright's Python package, never a browser Playwright downloads.

It opens the index, a derivation page, an algorithm page and a code page, and checks what a
reader gets: the math laid out by Chromium's MathML engine (no raw TeX in the page's text), the
derivation's two columns side by side at 1400 px and stacked at 400 px, a label link landing on
its equation and a code link on its function, below the sticky header. Screenshots go to a
temporary directory (printed), or to $PGNUMPY_SCREENSHOTS when set (docs/screenshots/ holds the
README's).

Without Chromium or Playwright the module skips, saying why, except under CI=true, where it fails:
.ci/run installs Chromium from apt, so CI always runs it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from pgnumpy.docs.build import build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
IN_CI = os.environ.get("CI") == "true"

DERIVATION = "09-ppo-clip.html"
ALGORITHM = "algo-ppo.html"
CODE = "pgnumpy.objectives.html"


def _unavailable() -> str | None:
    if CHROMIUM is None:
        return "no chromium on PATH (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


REASON = _unavailable()
if REASON is not None:
    if IN_CI:
        pytest.fail(f"CI=true but the browser test cannot run: {REASON}", pytrace=False)
    pytest.skip(REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Built in-process; the problems the builder reports are tests/test_docs.py's to fail on:
    here the browser has to find what is wrong by itself."""
    out = tmp_path_factory.mktemp("site")
    problems, _ = build(out)
    for msg in problems:
        print(f"build problem: {msg}")
    return out


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    where = os.environ.get("PGNUMPY_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, site: Path, name: str, width: int):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.goto((site / name).as_uri() if "#" not in name
              else (site / name.split("#")[0]).as_uri() + "#" + name.split("#")[1])
    page.wait_for_load_state("load")
    return page


@pytest.mark.parametrize("name", ["index.html", DERIVATION, ALGORITHM, CODE])
def test_page_shows_rendered_math_and_no_raw_tex(browser, site, shots, name):
    page = open_page(browser, site, name, 1400)
    # what a reader sees outside code listings (which may quote TeX, as the map's format does)
    text = page.evaluate("""() => { const b = document.body.cloneNode(true);
        b.querySelectorAll('pre, code').forEach(e => e.remove()); return b.textContent; }""")
    for raw in ("$$", "\\frac", "\\tag", "\\mathbb", "\\theta"):
        assert raw not in text, f"{name}: raw TeX {raw!r} visible"
    if name in (DERIVATION, ALGORITHM):
        # laid out by Chromium's MathML engine: display 'math'/'block math', and a fraction
        # stacked (its box taller than one line of text)
        displays = page.eval_on_selector_all("math", "els => els.map(e => getComputedStyle(e)"
                                             ".display)")
        assert len(displays) > 5 and all("math" in d for d in displays), set(displays)
        frac_h = page.eval_on_selector(".eq mfrac", "e => e.getBoundingClientRect().height")
        line_h = page.eval_on_selector("p", "e => parseFloat(getComputedStyle(e).lineHeight)")
        assert frac_h > 1.3 * line_h, (frac_h, line_h)
    page.screenshot(path=str(shots / f"{name.replace('.html', '')}-1400.png"))
    page.close()


def boxes(page, selector: str) -> tuple[dict, dict]:
    row = page.query_selector(selector)
    return (row.query_selector(".left").bounding_box(), row.query_selector(".right").bounding_box())


def test_columns_side_by_side_at_1400px_and_stacked_at_400px(browser, site, shots):
    wide = open_page(browser, site, DERIVATION + "#PPO.3", 1400)
    left, right = boxes(wide, ".eqrow")
    assert right["x"] >= left["x"] + left["width"] - 1, (left, right)  # beside it
    assert abs(right["y"] - left["y"]) < 5 and left["width"] > 500 and right["width"] > 500
    wide.screenshot(path=str(shots / "derivation-1400.png"))
    wide.close()
    narrow = open_page(browser, site, DERIVATION + "#PPO.3", 400)
    left, right = boxes(narrow, ".eqrow")
    assert right["y"] >= left["y"] + left["height"] - 1, (left, right)  # below it
    assert left["width"] > 300 and right["width"] > 300
    assert narrow.evaluate("document.documentElement.scrollWidth") <= 400 + 1  # no sideways page
    narrow.screenshot(path=str(shots / "derivation-400.png"))
    narrow.close()


def landed(page, element_id: str) -> bool:
    """The element is in the viewport, below the sticky header."""
    return page.evaluate(
        """id => { const r = document.getElementById(id).getBoundingClientRect();
                   const h = document.querySelector('header.top').getBoundingClientRect().bottom;
                   return r.top >= h - 1 && r.top < window.innerHeight; }""", element_id)


def test_a_label_link_lands_on_its_equation(browser, site, shots):
    page = open_page(browser, site, DERIVATION, 1400)
    # (PG.5) is cited in 09's prose and defined in 01: a link across pages
    link = page.locator("div.left a.label", has_text="PG.5").first
    href = link.get_attribute("href")
    assert re.fullmatch(r"[\w.-]+\.html#PG\.5", href), href
    link.click()
    page.wait_for_url(re.compile(r"#PG\.5$"))
    assert page.url.split("/")[-1] == href
    assert landed(page, "PG.5")
    assert page.eval_on_selector('[id="PG.5"]', "e => e.classList.contains('eq')")
    page.screenshot(path=str(shots / "label-link-landed.png"))
    page.close()


def test_a_code_link_lands_on_its_function(browser, site, shots):
    page = open_page(browser, site, DERIVATION + "#PPO.2", 1400)
    link = page.locator("aside.right a.ref", has_text="ppo_clip_loss").first
    assert link.get_attribute("href") == f"{CODE}#ppo_clip_loss"
    link.click()
    page.wait_for_url(re.compile(r"#ppo_clip_loss$"))
    assert landed(page, "ppo_clip_loss")
    # the line just below the anchor is the def itself
    first = page.evaluate("""() => { let e = document.getElementById('ppo_clip_loss');
        while (e && !(e.classList && e.classList.contains('line'))) e = e.nextElementSibling;
        return e.textContent; }""")
    assert re.search(r"def ppo_clip_loss\(", first), first
    page.screenshot(path=str(shots / "code-link-landed.png"))
    page.close()
