"""Build the reading site: derivation pages in two columns, code pages, algorithm pages.

Sources, all discovered at build time from the checkout this file belongs to:
  derivations/*.md   one page each; each labelled equation `$$ ... \\tag{X.n} $$` and its
                     `code: ... · test: ...` line (the map, derivations/README.md) become a row
                     whose right column holds the named functions' current source and the tests
  docs/*.md          one page each (measurements, how-tos)
  README.md          a page; derivations/README.md is the index's reading path
  pgnumpy/, tests/, examples/ *.py   a code page per file, each function an anchor, each
                     function the map names marked with the equations it computes
  pgnumpy/docs/algorithms.py         the algorithm pages (Spinning Up's order)

Libraries: markdown-it-py (CommonMark, the parser of the Executable Books tools) with
mdit-py-plugins' dollarmath (the `$`/`$$` syntax GitHub renders), latex2mathml (TeX -> MathML at
build time, so a reader's browser fetches nothing), Pygments (highlighting, split per line).

Every problem found while building (a label no equation defines, a `path::name` that does not
exist, a relative link to nothing on the site, TeX that did not convert) is collected; the CLI
prints them and exits 1, and tests/test_docs.py fails on them.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import html
import importlib
import io
import keyword
import re
import shutil
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = Path(__file__).resolve().parent / "static"
CODE_DIRS = ("pgnumpy", "tests", "examples")
IMAGE_EXT = {".png", ".gif", ".svg", ".jpg", ".jpeg"}

TAG = re.compile(r"\\tag\{([^}]*)\}")
REF = re.compile(r"((?:pgnumpy|tests|examples)/[\w/.\-]*\.py)::([\w.]+)")
PATH = re.compile(r"^((?:pgnumpy|tests|examples)/[\w/.\-]*\.py)$")
# a mention of a label: PREFIX.n, optionally a range PREFIX.n-m (hyphen or en dash)
MENTION = re.compile(r"(?<![\w.])([A-Z][A-Z0-9]*)\.(\d+)(?:([–-])(\d+))?(?![\w.])")
# a parenthesised mention with an unknown prefix is a broken label too (a typo in the prefix)
PAREN = re.compile(r"\(([A-Z]{2,}[A-Z0-9]*)\.(\d+)")


# ------------------------------------------------------------------------------- the sources

@dataclass
class Def:
    name: str  # "f" or "Class.method"
    start: int  # first line (its first decorator), 1-based
    line: int  # the def line
    end: int


@dataclass
class Source:
    path: str  # repository-relative, e.g. "pgnumpy/objectives.py"
    text: str
    defs: dict[str, Def]
    lines: list[str] = field(default_factory=list)  # highlighted HTML, one per source line

    @property
    def page(self) -> str:
        return code_page(self.path)


def md_page(rel: str) -> str:
    return "page-" + rel[:-3].replace("/", "-") + ".html"


def code_page(path: str) -> str:
    return path[:-3].replace("/", ".") + ".html"


def definitions(text: str) -> dict[str, Def]:
    """Top-level functions, classes and their methods (as tests/test_derivations.py reads them)."""
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = _def(node.name, node)
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        out[f"{node.name}.{sub.name}"] = _def(f"{node.name}.{sub.name}", sub)
    return out


def _def(name: str, node) -> Def:
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    return Def(name, start, node.lineno, node.end_lineno)


KEYWORD_CONSTANTS = {"True", "False", "None"}
BUILTINS = set(dir(builtins))


def highlight_lines(text: str) -> list[str]:
    """Python source as HTML, one string per source line, classes named as Pygments names them
    (k keyword, nf/nc defined name, s/sd string/docstring, c1 comment, mi number, nd decorator).
    The stdlib tokenizer does the lexing: 0.9 s for the 16k lines here against Pygments' 4.0 s,
    which made the whole build ~8 s. A file that does not tokenize is shown unhighlighted."""
    lines = text.splitlines(keepends=True)
    out: list[list[str]] = [[] for _ in lines]
    row, col = 1, 0  # the cursor: everything before it is emitted

    def emit(upto: tuple[int, int], cls: str | None) -> None:
        nonlocal row, col
        while (row, col) < upto and row <= len(lines):
            stop = upto[1] if row == upto[0] else len(lines[row - 1])
            piece = lines[row - 1][col:stop].rstrip("\r\n") if stop >= len(lines[row - 1]) \
                else lines[row - 1][col:stop]
            if piece:
                esc = html.escape(piece, quote=False)
                out[row - 1].append(f'<span class="{cls}">{esc}</span>' if cls else esc)
            if row == upto[0]:
                col = stop
                break
            row, col = row + 1, 0

    try:
        prev, prev_sig, decorator = None, tokenize.NEWLINE, False
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.ENDMARKER:
                break
            emit(tok.start, None)
            cls = None
            if tok.type == tokenize.NAME:
                if tok.string in KEYWORD_CONSTANTS:
                    cls = "kc"
                elif keyword.iskeyword(tok.string):
                    cls = "k"
                elif prev is not None and prev.string == "def":
                    cls = "nf"
                elif prev is not None and prev.string == "class":
                    cls = "nc"
                elif decorator:
                    cls = "nd"
                elif tok.string == "self":
                    cls = "bp"
                elif tok.string in BUILTINS and (prev is None or prev.string != "."):
                    cls = "nb"
            elif tok.type == tokenize.STRING or tok.type in FSTRING:
                docstring = prev_sig in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) \
                    and tok.string.lstrip("rRbBuU").startswith(('"""', "'''"))
                cls = "sd" if docstring else "s"
            elif tok.type == tokenize.COMMENT:
                cls = "c1"
            elif tok.type == tokenize.NUMBER:
                cls = "mi"
            elif tok.type == tokenize.OP:
                cls = "nd" if tok.string == "@" and prev_sig in (
                    tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) else "o"
            if tok.type == tokenize.OP and tok.string == "@" and cls == "nd":
                decorator = True
            elif tok.type in (tokenize.NEWLINE, tokenize.NL) or (
                    tok.type == tokenize.OP and tok.string == "("):
                decorator = False
            emit(tok.end, cls)
            if tok.type not in (tokenize.NL, tokenize.COMMENT):
                prev_sig = tok.type
                prev = tok
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return [html.escape(ln.rstrip("\r\n"), quote=False) for ln in lines]
    emit((len(lines) + 1, 0), None)
    return ["".join(parts) for parts in out]


FSTRING = {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
           if hasattr(tokenize, n)}


def read_sources() -> dict[str, Source]:
    sources = {}
    for top in CODE_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if any(part.startswith(".") or part == "__pycache__" for part in path.parts):
                continue
            text = path.read_text()
            try:
                defs = definitions(text)
            except SyntaxError:
                defs = {}
            sources[rel] = Source(rel, text, defs)
    return sources


# ---------------------------------------------------------------------------------- the map

@dataclass
class Equation:
    label: str
    tex: str  # the block's TeX without \tag
    page: str  # the derivation page it is on
    title: str  # that page's title
    code: list[tuple[str, str]]
    test: list[tuple[str, str]]


def parse_code_line(line: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    code_part, _, test_part = line.partition(" · test: ")
    return REF.findall(code_part), REF.findall(test_part)


def deriv_page(md: Path) -> str:
    return "index.html" if md.name == "README.md" else md.stem + ".html"


def title_of(text: str, default: str) -> str:
    m = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else default


# ------------------------------------------------------------------------------- the builder

class Site:
    def __init__(self, out: Path):
        self.out = out
        self.problems: list[str] = []
        self.sources = read_sources()
        self.derivations = sorted(p for p in (ROOT / "derivations").glob("*.md")
                                  if p.name != "README.md")
        self.docs = sorted((ROOT / "docs").glob("*.md")) if (ROOT / "docs").is_dir() else []
        self.equations: dict[str, Equation] = {}
        self.cited_by: dict[tuple[str, str], list[str]] = {}  # (path, name) -> labels
        self.copies: set[str] = set()  # images and other files pages link to, copied as they are
        self.extra_md: set[str] = set()  # other markdown files a page links to (plots/README.md)
        self._collect_equations()
        self.prefixes = {label.split(".")[0] for label in self.equations}
        self.md = self._markdown()
        self._where = ""  # the file being rendered, for problem messages

    # -- the map
    def _collect_equations(self) -> None:
        for md in self.derivations:
            text = md.read_text()
            for row in split_rows(text):
                if row.kind != "eq":
                    continue
                for label in row.labels:
                    if label in self.equations:
                        self.problems.append(f"{md.name}: ({label}) defined twice")
                    self.equations[label] = Equation(label, row.tex, deriv_page(md),
                                                     title_of(text, md.stem), row.code, row.test)
                    for ref in row.code:
                        self.cited_by.setdefault(ref, []).append(label)

    # -- markdown with math
    def _markdown(self):
        from markdown_it import MarkdownIt
        from mdit_py_plugins.anchors import anchors_plugin
        from mdit_py_plugins.dollarmath import dollarmath_plugin

        md = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")
        md.use(dollarmath_plugin, allow_labels=False, allow_space=True, allow_digits=True,
               double_inline=True, renderer=self._math)
        md.use(anchors_plugin, min_level=1, max_level=3)
        # markdown-it binds a rule to its renderer: the first argument is the renderer
        md.add_render_rule("code_inline", lambda r, *a: self._code_inline(*a))
        md.add_render_rule("link_open", lambda r, *a: self._link_open(*a))
        md.add_render_rule("image", lambda r, *a: self._image(*a))
        return md

    def _math(self, tex: str, options: dict) -> str:
        display = options.get("display_mode", False)
        labels = TAG.findall(tex)
        body = tex_to_mathml(TAG.sub("", tex), display, self._problem)
        if not display:
            return body
        eqno = "".join(f'<a class="eqno" href="#{lb}">({lb})</a>' for lb in labels)
        ids = f' id="{labels[0]}"' if labels else ""
        return f'<div class="eq"{ids}><div class="eqbody">{body}</div>{eqno}</div>\n'

    def _problem(self, msg: str) -> None:
        # tests/ name broken labels and functions on purpose (the map checks' own tests): their
        # code pages show them unlinked, and only the derivations' references to tests count
        if not self._where.startswith("tests/"):
            self.problems.append(f"{self._where}: {msg}")

    def _code_inline(self, tokens, idx, options, env):
        content = tokens[idx].content
        code = f"<code>{html.escape(content)}</code>"
        m = REF.fullmatch(content)
        if m:
            href = self.ref_href(m.group(1), m.group(2))
            return f'<a class="ref" href="{href}">{code}</a>' if href else code
        m = PATH.fullmatch(content)
        if m:
            if m.group(1) in self.sources:
                return f'<a class="ref" href="{code_page(m.group(1))}">{code}</a>'
            self._problem(f"`{content}`: no such file")
        return code

    def _link_open(self, tokens, idx, options, env):
        tok = tokens[idx]
        href = tok.attrGet("href") or ""
        tok.attrSet("href", self.map_link(href, env["base"]))
        return self.md.renderer.renderToken(tokens, idx, options, env)

    def _image(self, tokens, idx, options, env):
        tok = tokens[idx]
        tok.attrSet("src", self.map_link(tok.attrGet("src") or "", env["base"]))
        alt = html.escape("".join(t.content for t in tok.children or []))
        return f'<img src="{tok.attrGet("src")}" alt="{alt}" loading="lazy">'

    def render_md(self, text: str, base: Path) -> str:
        return self.link_text(self.md.render(text, {"base": base}), code=False)

    # -- links
    def ref_href(self, path: str, name: str) -> str | None:
        src = self.sources.get(path)
        if src is None:
            self._problem(f"{path}::{name}: no such file")
            return None
        if name not in src.defs:
            self._problem(f"{path}::{name}: {path} has no {name}")
            return None
        return f"{src.page}#{name}"

    def map_link(self, href: str, base: Path) -> str:
        """A relative link in a markdown file at `base` -> the page or file that shows it here."""
        if not href or re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith("#"):
            return href
        target, _, frag = href.partition("#")
        path = (base / target).resolve()
        try:
            rel = path.relative_to(ROOT).as_posix()
        except ValueError:
            self._problem(f"link {href}: outside the repository")
            return href
        frag = f"#{frag}" if frag else ""
        if rel in ("derivations", "derivations/README.md"):
            return "index.html" + frag
        if rel == "README.md":
            return "readme.html" + frag
        if rel.startswith("derivations/") and rel.endswith(".md") and path.exists():
            return path.stem + ".html" + frag
        if rel.startswith("docs/") and rel.endswith(".md") and path.exists():
            return "doc-" + path.stem + ".html" + frag
        if rel.endswith(".md") and path.exists():  # another markdown file: a page of its own
            self.extra_md.add(rel)
            return md_page(rel) + frag
        if rel in self.sources:
            return code_page(rel) + frag
        if path.suffix.lower() in IMAGE_EXT and path.exists():
            self.copies.add(rel)
            return rel
        if path.is_dir():  # a folder: the index lists the code and the derivations
            return "index.html#code" if rel.split("/")[0] in CODE_DIRS else "index.html"
        if path.is_file() and rel.split("/")[0] != ".git":  # any other file, as it is
            self.copies.add(rel)
            return rel
        self._problem(f"link {href}: {rel} does not exist")
        return href

    def label_link(self, m: re.Match, code: bool) -> str:
        prefix, num, dash, last = m.groups()
        label = f"{prefix}.{num}"
        if prefix not in self.prefixes:
            return m.group(0)
        if label not in self.equations:
            self._problem(f"({label}): no equation has this label")
            return f'<span class="unresolved">{m.group(0)}</span>'
        if last and f"{prefix}.{last}" not in self.equations:
            self._problem(f"({prefix}.{last}): no equation has this label")
        eq = self.equations[label]
        return (f'<a class="label" href="{eq.page}#{label}" title="{html.escape(eq.title)}">'
                f"{m.group(0)}</a>")

    def link_text(self, html_text: str, code: bool) -> str:
        """Links every label mention and `path::name` in the text outside tags, links, math and
        preformatted code."""
        parts = re.split(r"(<[^>]+>)", html_text)
        depth = {"a": 0, "math": 0, "pre": 0}
        for i, part in enumerate(parts):
            if part.startswith("<"):
                tag = re.match(r"<(/?)(a|math|pre)\b", part)
                if tag:
                    depth[tag.group(2)] += -1 if tag.group(1) else 1
                continue
            if not part or any(depth.values()):
                continue
            for pm in PAREN.finditer(part):
                if pm.group(1) not in self.prefixes:
                    self._problem(f"({pm.group(1)}.{pm.group(2)}): unknown label prefix")
            part = REF.sub(self._ref_sub, part)
            parts[i] = _sub_outside_tags(part, lambda s: MENTION.sub(
                lambda m: self.label_link(m, code), s))
        return "".join(parts)

    def _ref_sub(self, m: re.Match) -> str:
        href = self.ref_href(m.group(1), m.group(2))
        return f'<a class="ref" href="{href}">{m.group(0)}</a>' if href else m.group(0)

    # -- pages
    def build(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for src in self.sources.values():
            src.lines = highlight_lines(src.text)
        pages = [("index.html", "pgnumpy: derivations beside the code", self.index())]
        for md in self.derivations:
            self._where = f"derivations/{md.name}"
            text = md.read_text()
            pages.append((deriv_page(md), title_of(text, md.stem), self.derivation(md, text)))
        for md in self.docs:
            self._where = f"docs/{md.name}"
            text = md.read_text()
            pages.append(("doc-" + md.stem + ".html", title_of(text, md.stem),
                          self.prose(text, md.parent)))
        self._where = "README.md"
        readme = (ROOT / "README.md").read_text()
        pages.append(("readme.html", "README", self.prose(readme, ROOT)))
        done: set[str] = set()
        while self.extra_md - done:  # they may link to more
            rel = sorted(self.extra_md - done)[0]
            done.add(rel)
            self._where = rel
            text = (ROOT / rel).read_text()
            pages.append((md_page(rel), title_of(text, rel), self.prose(text, (ROOT / rel).parent)))
        from pgnumpy.docs import algorithms

        for algo in algorithms.ALGORITHMS:
            self._where = f"algorithm page {algo.slug}"
            pages.append((algo.page, algo.title, algorithms.render(self, algo)))
        for src in self.sources.values():
            self._where = src.path
            pages.append((src.page, src.path, self.code(src)))
        for name, title, body in pages:
            (self.out / name).write_text(layout(title, body, self.nav_active(name)))
        shutil.copy(STATIC / "style.css", self.out / "style.css")
        for rel in sorted(self.copies):
            dest = self.out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, dest)

    def nav_active(self, name: str) -> str:
        return name

    def title_of_page(self, stem: str) -> str:
        md = ROOT / "derivations" / f"{stem}.md"
        if not md.is_file():
            self._problem(f"derivations/{stem}.md: no such derivation")
            return stem
        return title_of(md.read_text(), stem)

    def index(self) -> str:
        from pgnumpy.docs import algorithms

        self._where = "derivations/README.md"
        reading = self.render_md((ROOT / "derivations" / "README.md").read_text(),
                                 ROOT / "derivations")
        algos = "".join(f'<li><a href="{a.page}">{html.escape(a.title)}</a> — '
                        f"{html.escape(a.summary)}</li>" for a in algorithms.ALGORITHMS)
        docs = "".join(f'<li><a href="doc-{md.stem}.html">'
                       f"{html.escape(title_of(md.read_text(), md.stem))}</a></li>"
                       for md in self.docs)
        groups: dict[str, list[Source]] = {}
        for src in self.sources.values():
            groups.setdefault(src.path.rsplit("/", 1)[0], []).append(src)
        code = "".join(
            f"<h3>{html.escape(d)}/</h3><ul class='files'>"
            + "".join(f'<li><a href="{s.page}">{html.escape(s.path.rsplit("/", 1)[1])}</a>'
                      f"{self._doc_line(s)}</li>" for s in srcs) + "</ul>"
            for d, srcs in groups.items())
        intro = (
            "<p class='lead'>Policy-gradient reinforcement learning from scratch in NumPy. Every "
            "gradient is derived by hand on the derivation pages, computed by the function shown "
            "beside its equation, and checked by the test named under it. "
            f"{len(self.equations)} labelled equations; each label links to its equation, each "
            "function to its source.</p>"
            "<p>Start with <a href='01-simplest-pg.html'>1. The simplest policy gradient</a>, or "
            "an algorithm page. The project's <a href='readme.html'>README</a>.</p>")
        return (f"<article class='prose'><h1>pgnumpy</h1>{intro}"
                f"<h2 id='algorithms'>Algorithms</h2><ul>{algos}</ul>"
                + (f"<h2 id='docs'>Guides and measurements</h2><ul>{docs}</ul>" if docs else "")
                + f"<section id='derivations'>{reading}</section>"
                f"<h2 id='code'>Code</h2>{code}</article>")

    def _doc_line(self, src: Source) -> str:
        try:
            doc = ast.get_docstring(ast.parse(src.text)) or ""
        except SyntaxError:
            doc = ""
        first = doc.strip().split("\n\n")[0].replace("\n", " ")
        if len(first) > 160:
            first = first[:157].rsplit(" ", 1)[0] + " …"
        return f" — {self.link_text(html.escape(first), code=True)}" if first else ""

    def prose(self, text: str, base: Path) -> str:
        return f"<article class='prose'>{self.render_md(text, base)}</article>"

    def derivation(self, md: Path, text: str) -> str:
        rows = []
        for row in split_rows(text):
            left = self.render_md(row.text, md.parent)
            if row.kind == "eq":
                right = self.beside(row)
                rows.append(f"<div class='row eqrow'><div class='left'>{left}</div>"
                            f"<aside class='right'>{right}</aside></div>")
            elif left.strip():
                rows.append(f"<div class='row'><div class='left'>{left}</div>"
                            f"<aside class='right empty'></aside></div>")
        return "<div class='derivation'>" + "\n".join(rows) + "</div>"

    def beside(self, row: Row) -> str:
        """The right column of an equation: each named function's source, then each test."""
        out = []
        for k, (path, name) in enumerate(row.code):
            src = self.sources.get(path)
            if src is None or name not in src.defs:
                self.ref_href(path, name)  # records the problem
                continue
            d = src.defs[name]
            open_ = " open" if k == 0 else ""
            out.append(
                f"<details class='src'{open_}><summary><a class='ref' href='{src.page}#{name}'>"
                f"<code>{html.escape(path)}::{html.escape(name)}</code></a> "
                f"<span class='lines'>lines {d.start}–{d.end}</span></summary>"
                f"{self.snippet(src, d.start, d.end)}</details>")
        for path, name in row.test:
            src = self.sources.get(path)
            if src is None or name not in src.defs:
                self.ref_href(path, name)
                continue
            d = src.defs[name]
            out.append(
                f"<details class='test'><summary>test: <a class='ref' href='{src.page}#{name}'>"
                f"<code>{html.escape(path)}::{html.escape(name)}</code></a> "
                f"<span class='lines'>lines {d.start}–{d.end}</span></summary>"
                f"{self.snippet(src, d.start, d.end)}</details>")
        return "".join(out)

    def snippet(self, src: Source, start: int, end: int) -> str:
        lines = []
        for n in range(start, end + 1):
            body = self.link_text(src.lines[n - 1], code=True)
            lines.append(f"<span class='ln'>{n}</span>{body}")
        return "<pre class='code'>" + "\n".join(lines) + "</pre>"

    def code(self, src: Source) -> str:
        starts: dict[int, list[Def]] = {}
        for d in src.defs.values():
            starts.setdefault(d.start, []).append(d)
        lines = []
        for n, body in enumerate(src.lines, 1):
            for d in starts.get(n, []):
                anchor = f"<span class='anchor' id='{d.name}'></span>"
                labels = self.cited_by.get((src.path, d.name), [])
                if labels:
                    links = ", ".join(
                        f"<a class='label' href='{self.equations[lb].page}#{lb}'>({lb})</a>"
                        for lb in labels)
                    anchor += (f"<span class='computes'>{html.escape(d.name)} computes "
                               f"{links}</span>")
                lines.append(anchor)
            lines.append(f"<span class='line' id='L{n}'><a class='ln' href='#L{n}'>{n}</a>"
                         f"{self.link_text(body, code=True)}</span>")
        funcs = [d for d in src.defs.values()]
        toc = "".join(
            f"<li><a href='#{d.name}'><code>{html.escape(d.name)}</code></a>"
            + "".join(f" <a class='label' href='{self.equations[lb].page}#{lb}'>({lb})</a>"
                      for lb in self.cited_by.get((src.path, d.name), []))
            + "</li>" for d in funcs)
        return (f"<article class='codepage'><h1><code>{html.escape(src.path)}</code></h1>"
                + (f"<details class='toc' open><summary>{len(funcs)} definitions</summary>"
                   f"<ul class='defs'>{toc}</ul></details>" if funcs else "")
                + "<pre class='code listing'>" + "".join(lines) + "</pre></article>")


def _sub_outside_tags(text: str, fn) -> str:
    parts = re.split(r"(<a\b[^>]*>.*?</a>)", text)
    return "".join(p if p.startswith("<a") else fn(p) for p in parts)


# ------------------------------------------------------------------- derivations into rows

@dataclass
class Row:
    kind: str  # "text" or "eq"
    text: str  # the markdown of the row
    labels: list[str] = field(default_factory=list)
    tex: str = ""
    code: list[tuple[str, str]] = field(default_factory=list)
    test: list[tuple[str, str]] = field(default_factory=list)


def split_rows(text: str) -> list[Row]:
    """Prose rows and equation rows: an equation row is one `$$` block holding a \\tag and the
    map line under it (within three lines, as tests/test_derivations.py reads it)."""
    lines = text.splitlines()
    rows, buf, i, fence = [], [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence = not fence
        if fence or not line.lstrip().startswith("$$"):
            buf.append(line)
            i += 1
            continue
        j = i
        stripped = line.strip()
        if not (stripped.count("$$") >= 2 and len(stripped) > 2):  # a multi-line block
            j = i + 1
            while j < len(lines) and lines[j].strip() != "$$":
                j += 1
        block = lines[i : j + 1]
        labels = TAG.findall("\n".join(block))
        if not labels:
            buf += block
            i = j + 1
            continue
        k = next((x for x in range(j + 1, min(j + 4, len(lines)))
                  if lines[x].startswith("code:")), None)
        end = j if k is None else k
        if buf:
            rows.append(Row("text", "\n".join(buf)))
            buf = []
        code, test = parse_code_line(lines[k]) if k is not None else ([], [])
        tex = "\n".join(block).strip().strip("$")
        rows.append(Row("eq", "\n".join(lines[i : end + 1]), labels, TAG.sub("", tex).strip(),
                        code, test))
        i = end + 1
    if buf:
        rows.append(Row("text", "\n".join(buf)))
    return rows


# ------------------------------------------------------------------------------------ math

def tex_to_mathml(tex: str, display: bool, problem) -> str:
    """latex2mathml, with the few constructs it leaves as text fixed; TeX it cannot convert is
    left visible (and reported), never dropped."""
    from latex2mathml.converter import convert

    # an escaped underscore inside a text command stays "\_" in latex2mathml's output
    fixed = re.sub(r"(\\(?:text|texttt|textrm|textsf|textit|textbf)\{)([^}]*)\}",
                   lambda m: m.group(1) + m.group(2).replace("\\_", "_") + "}", tex)
    try:
        out = convert(fixed, display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises its own exception types, and some bare ones
        problem(f"TeX that latex2mathml cannot convert ({type(e).__name__}: {e}): {tex[:80]}")
        return f"<span class='tex-error'>${html.escape(tex)}$</span>"
    out = out.replace(">\\{<", ">{<").replace(">\\}<", ">}<")
    leftover = re.findall(r">([^<]*\\(?:[A-Za-z]+|_)[^<]*)<", out)
    if leftover:
        problem(f"TeX left unconverted: {leftover[0][:60]} in {tex[:80]}")
    return out


# ---------------------------------------------------------------------------------- layout

NAV = (("index.html", "Home"), ("index.html#algorithms", "Algorithms"),
       ("index.html#derivations", "Derivations"), ("index.html#code", "Code"),
       ("readme.html", "README"))


def layout(title: str, body: str, name: str) -> str:
    nav = "".join(f"<a href='{h}'>{t}</a>" for h, t in NAV)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} · pgnumpy</title>"
        "<link rel='stylesheet' href='style.css'></head>"
        f"<body><header class='top'><a class='brand' href='index.html'>pgnumpy</a>"
        f"<nav>{nav}</nav></header><main>{body}</main>"
        "<footer>Built by <code>python -m pgnumpy.docs</code> from the derivations and the "
        "current source.</footer></body></html>\n")


# ------------------------------------------------------------------------------------- CLI

def build(out: Path) -> tuple[list[str], float]:
    """Build the site into `out`; (the problems found, seconds taken)."""
    t0 = time.perf_counter()
    site = Site(Path(out))
    site.build()
    return sorted(set(site.problems)), time.perf_counter() - t0


def config_rows(module_name: str, cls_name: str, show=repr) -> list[tuple[str, str, str]]:
    """(field, default, description) of a config dataclass; descriptions from the module
    docstring's "Hyperparameters" list (as the CLI's --help), else the field's own comment."""
    from pgnumpy.train import field_help

    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    helps = field_help(module.__doc__ or "")
    comments = _field_comments(Path(module.__file__).read_text(), cls_name)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        rows.append((f.name, show(default), helps.get(f.name) or comments.get(f.name, "")))
    return rows


def _field_comments(text: str, cls_name: str) -> dict[str, str]:
    tree = ast.parse(text)
    lines = text.splitlines()
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for sub in node.body:
                if isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    line = lines[sub.lineno - 1]
                    if "#" in line:
                        out[sub.target.id] = line.split("#", 1)[1].strip()
    return out


def _main(argv: list[str] | None) -> int:
    from pgnumpy import cli
    from pgnumpy.errors import UserError

    p = cli.ArgumentParser(prog="python -m pgnumpy.docs",
                           description="Build the reading site (static HTML, nothing fetched "
                           "at view time) into DIR.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    problems, seconds = build(out)
    for msg in problems:
        print(f"problem: {msg}")
    pages = len(list(out.glob("*.html")))
    print(f"built {pages} pages into {out} in {seconds:.2f} s; open {out / 'index.html'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    from pgnumpy import cli

    return cli.entry(_main, argv)
