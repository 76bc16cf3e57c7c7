"""The reading site (python -m pgnumpy.docs) builds, and nothing on it dangles.

The site is built once for this module, into a temporary directory. The checks read the HTML
with the standard library's parser, independently of the builder, and read the map with
tests/test_derivations.py's parser, so a builder that forgot an equation, dropped a link or left
TeX unconverted fails here even if it reported nothing:
  - the builder reports no problem (a label no equation defines, a `path::name` that does not
    exist, a relative link to nothing on the site, TeX latex2mathml could not convert);
  - every href and src on every page lands: the file exists and, with a #fragment, holds that id;
  - every labelled equation is an anchor on its derivation page; beside it, links to each
    function and test its map line names, and each of those functions' code pages links back;
  - no raw TeX in what a reader sees (outside code): no `$$`, no `\\frac` or other `\\command`;
  - math is MathML, and nothing is fetched from outside (no script, no remote stylesheet, font
    or image).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from test_derivations import all_entries

from pgnumpy.docs.algorithms import ALGORITHMS
from pgnumpy.docs.build import ROOT, code_page

RAW_TEX = re.compile(r"\$\$|\\(frac|sum|mathbb|theta|pi|nabla|log|text|tag|begin|left)\b")
DERIVATION_PAGES = {md.stem + ".html" for md in (ROOT / "derivations").glob("*.md")
                    if md.name != "README.md"}


class Page(HTMLParser):
    """ids, links, and the text a reader sees outside code and math, of one page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.visible: list[str] = []
        self.tags: dict[str, int] = {}
        self.a_stack: list[str] = []
        self.anchors: list[tuple[str, str]] = []  # (href, text) of each <a>
        self._skip = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.links.append((tag, a[key]))
        if tag in ("pre", "code", "math", "style"):
            self._skip += 1
        if tag == "a":
            self.a_stack.append(a.get("href", ""))
            self.anchors.append((a.get("href", ""), ""))

    def handle_endtag(self, tag):
        if tag in ("pre", "code", "math", "style"):
            self._skip -= 1
        if tag == "a" and self.a_stack:
            self.a_stack.pop()

    def handle_data(self, data):
        if not self._skip:
            self.visible.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Built once, by the public command, as a reader builds it."""
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pgnumpy.docs", "--out", str(out)],
                       capture_output=True, text=True)
    problems = [ln for ln in r.stdout.splitlines() if ln.startswith("problem: ")]
    assert r.returncode == (1 if problems else 0), r.stdout + r.stderr
    assert "built " in r.stdout
    pages = {p.name: Page(p.read_text()) for p in out.glob("*.html")}
    return out, problems, pages


def test_the_build_reports_no_problem(site):
    _, problems, _ = site
    assert not problems, "\n".join(problems)


def test_every_link_and_image_lands(site):
    out, _, pages = site
    dangling = []
    for name, page in pages.items():
        for tag, url in page.links:
            if re.match(r"^(https?|mailto):", url):
                assert tag == "a", f"{name}: <{tag}> loads {url} from outside"
                continue
            target, _, frag = url.partition("#")
            file = out / target if target else out / name
            if not file.is_file():
                dangling.append(f"{name}: {url} (no file)")
            elif frag and file.suffix == ".html" and frag not in pages[file.name].ids:
                dangling.append(f"{name}: {url} (no id {frag!r})")
    assert not dangling, "\n".join(dangling[:30])
    assert sum(len(p.links) for p in pages.values()) > 2000  # the pages do link


def test_every_equation_is_an_anchor_beside_its_code_and_tests_and_the_code_links_back(site):
    out, _, pages = site
    entries, parse_problems = all_entries()
    assert not parse_problems
    assert len(entries) >= 40
    by_file = {}
    for md in sorted((ROOT / "derivations").glob("*.md")):
        text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)  # the README's example
        for label in re.findall(r"\\tag\{([^}]*)\}", text):
            by_file[label] = md.stem + ".html"
    missing = []
    for e in entries:
        page_name = by_file[e["label"]]
        html = (out / page_name).read_text()
        if e["label"] not in pages[page_name].ids:
            missing.append(f"({e['label']}): no anchor on {page_name}")
            continue
        # the equation's row: from its anchor to the next row
        start = html.index(f'id="{e["label"]}"')
        row_end = html.find("<div class='row", start)
        row = html[start : row_end if row_end > 0 else len(html)]
        for path, name in e["code"] + e["test"]:
            href = f"{code_page(path)}#{name}"
            if href not in row:
                missing.append(f"({e['label']}): no link to {href} beside it")
            if name not in pages[code_page(path)].ids:
                missing.append(f"({e['label']}): {code_page(path)} has no anchor {name}")
        for path, _ in e["code"]:
            back = f"{page_name}#{e['label']}"
            if back not in (out / code_page(path)).read_text():
                missing.append(f"({e['label']}): {code_page(path)} does not link back to {back}")
    assert not missing, "\n".join(missing)


def test_no_raw_tex_is_left_where_a_reader_sees_it(site):
    _, _, pages = site
    leaks = []
    for name, page in pages.items():
        text = "".join(page.visible)
        # derivations use $ for math only: one left visible is math that was not converted
        raw = re.compile(RAW_TEX.pattern + r"|\$") if name in DERIVATION_PAGES else RAW_TEX
        for m in raw.finditer(text):
            leaks.append(f"{name}: {text[max(0, m.start() - 40) : m.end() + 40]!r}")
    assert not leaks, "\n".join(leaks[:20])


def test_math_is_mathml_on_every_derivation_page(site):
    _, _, pages = site
    for md in sorted((ROOT / "derivations").glob("*.md")):
        if md.name == "README.md":
            continue
        text = re.sub(r"```.*?```|`[^`\n]*`", "", md.read_text(), flags=re.S)
        blocks = len(re.findall(r"^\$\$.+\$\$\s*$", text, re.M))  # one-line blocks
        page = pages[md.stem + ".html"]
        assert page.tags.get("math", 0) >= max(1, blocks), md.name


def test_nothing_is_fetched_from_outside(site):
    out, _, pages = site
    for name, page in pages.items():
        assert "script" not in page.tags, name
        for tag, url in page.links:
            if tag != "a":
                assert not re.match(r"^[a-z]+:", url), f"{name}: <{tag}> {url}"
    css = (out / "style.css").read_text()
    assert "@import" not in css and "url(" not in css


def test_every_module_derivation_and_doc_has_a_page(site):
    out, _, _ = site
    for top in ("pgnumpy", "tests"):
        for py in (ROOT / top).rglob("*.py"):
            rel = py.relative_to(ROOT).as_posix()
            assert (out / code_page(rel)).is_file(), rel
    for md in (ROOT / "derivations").glob("[0-9a-z]*.md"):
        assert (out / (md.stem + ".html")).is_file(), md.name
    for md in (ROOT / "docs").glob("*.md"):
        assert (out / f"doc-{md.stem}.html").is_file(), md.name


def test_each_algorithm_page_lists_every_field_of_its_configs_and_its_key_equations(site):
    out, _, pages = site
    for algo in ALGORITHMS:
        text = (out / algo.page).read_text()
        for module, cls in algo.configs:
            for f in dataclasses.fields(getattr(importlib.import_module(module), cls)):
                assert f"<td><code>{f.name}</code></td>" in text, (algo.page, cls, f.name)
        for label in algo.labels:
            assert f"#{label}'>({label})</a>" in text, (algo.page, label)
        assert pages[algo.page].tags.get("math", 0) >= len(algo.labels)


def test_bad_usage_is_one_line_and_status_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for argv in (["--out", str(blocker)], []):
        r = subprocess.run([sys.executable, "-m", "pgnumpy.docs", *argv], capture_output=True,
                           text=True)
        assert r.returncode == 2, argv
        assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") <= 2, r.stderr
    assert blocker.read_text() == "x"


def test_an_escaped_underscore_in_a_text_command_renders_as_an_underscore():
    """\\texttt{dr\\_grpo} (derivations/14) came out as the text "dr\\_grpo": the builder's
    fix covered \\text only, and its leftover check did not see "\\_". Text-mode commands
    only: in \\mathrm, _ is a subscript."""
    from pgnumpy.docs.build import tex_to_mathml

    problems: list[str] = []
    for tex in (r"\texttt{dr\_grpo}", r"\text{next\_val}", r"\textrm{low\_var\_kl}"):
        out = tex_to_mathml(tex, False, problems.append)
        assert "\\_" not in out and "_" in out, out
    assert problems == []
