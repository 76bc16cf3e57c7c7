"""The derivation map cannot rot, and the markdown renders on GitHub.

Every numbered equation in derivations/*.md (a `\\tag{X.n}` inside `$$ ... $$`) is followed by a
line `code: `path::name`, ... · test: `path::name`, ...`. This file checks, without importing
the package (by reading its source with `ast`):
  - each referenced file exists, each referenced function / Class.method / test exists in it;
  - each referenced package function's docstring names the label it computes;
  - no label is defined twice;
  - every hand-derived gradient function in the package is referenced by some derivation.
    The rule, mechanical: every public function or method in pgnumpy/ whose name ends in
    `_grad`, `_grad_other`, `_loss`, `loss_and_grad` or is `backward`, and every numba kernel
    (`@numba.njit`) except `episode_stats` (bookkeeping: it computes no equation).
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DERIV = ROOT / "derivations"
REF = re.compile(r"`([\w/.\-]+\.py)::([\w.]+)`")
GRADIENT_NAME = re.compile(r"(_grad|_grad_other|_loss|loss_and_grad|^backward)$")
NOT_EQUATIONS = {"episode_stats"}


def definitions(path: Path) -> dict[str, ast.AST]:
    """'name' and 'Class.method' -> the def node, for one source file."""
    tree = ast.parse(path.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    out[f"{node.name}.{sub.name}"] = sub
    return out


def parse_map(text: str) -> tuple[list[dict], list[str]]:
    """Equations with their label and references; and the problems found while parsing."""
    entries, problems = [], []
    lines = text.splitlines()
    in_code = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for label in re.findall(r"\\tag\{([^}]*)\}", line):
            ref_line = next((lines[j] for j in range(i + 1, min(i + 4, len(lines)))
                             if lines[j].startswith("code:")), None)
            if ref_line is None or " · test: " not in ref_line:
                problems.append(f"({label}): no 'code: ... · test: ...' line under it")
                continue
            code_part, test_part = ref_line.split(" · test: ", 1)
            entries.append({"label": label, "code": REF.findall(code_part),
                            "test": REF.findall(test_part)})
            if not entries[-1]["code"] or not entries[-1]["test"]:
                problems.append(f"({label}): empty code or test reference")
    return entries, problems


def check_entries(entries: list[dict]) -> list[str]:
    problems, cache = [], {}
    for e in entries:
        for kind in ("code", "test"):
            for path, name in e[kind]:
                file = ROOT / path
                if not file.exists():
                    problems.append(f"({e['label']}): {kind} file {path} does not exist")
                    continue
                defs = cache.setdefault(path, definitions(file))
                if name not in defs:
                    problems.append(f"({e['label']}): {path} has no {name}")
                    continue
                if kind == "code":
                    doc = ast.get_docstring(defs[name]) or ""
                    if not re.search(rf"\b{re.escape(e['label'])}\b", doc):
                        problems.append(f"({e['label']}): docstring of {path}::{name} does not "
                                        f"name {e['label']}")
    return problems


def all_entries() -> tuple[list[dict], list[str]]:
    entries, problems = [], []
    for md in sorted(DERIV.glob("*.md")):
        found, probs = parse_map(md.read_text())
        entries += found
        problems += [f"{md.name}: {p}" for p in probs]
    return entries, problems


def test_every_reference_exists_and_every_docstring_names_its_label():
    entries, problems = all_entries()
    assert len(entries) >= 40
    problems += check_entries(entries)
    assert not problems, "\n".join(problems)


def test_no_label_is_defined_twice():
    labels = [e["label"] for e in all_entries()[0]]
    assert len(labels) == len(set(labels)), sorted(x for x in labels if labels.count(x) > 1)


def hand_derived_functions() -> set[tuple[str, str]]:
    found = set()
    for path in sorted((ROOT / "pgnumpy").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for name, node in definitions(path).items():
            if not isinstance(node, ast.FunctionDef) or name.split(".")[-1].startswith("_"):
                continue
            short = name.split(".")[-1]
            jitted = any("njit" in ast.unparse(d) for d in node.decorator_list)
            if GRADIENT_NAME.search(short) or (jitted and short not in NOT_EQUATIONS):
                found.add((rel, name))
    return found


def test_every_hand_derived_gradient_is_derived_somewhere():
    referenced = {ref for e in all_entries()[0] for ref in e["code"]}
    missing = hand_derived_functions() - referenced
    assert not missing, f"hand-derived functions no derivation names: {sorted(missing)}"
    assert len(hand_derived_functions()) >= 15  # the rule finds the package's gradients


def test_the_map_check_catches_broken_references():
    bad = ("$$x = 1 \\tag{T.1}$$\n\n"
           "code: `pgnumpy/no_such_file.py::f` · test: `tests/test_nn.py::no_such_test`\n\n"
           "$$y = 2 \\tag{T.2}$$\n\n"
           "code: `pgnumpy/objectives.py::no_such_function` · test: `tests/test_nn.py::"
           "test_views_share_the_flat_vector`\n\n"
           "$$z = 3 \\tag{T.3}$$\n\n"
           "code: `pgnumpy/objectives.py::pg_loss` · test: `tests/test_objectives.py::"
           "test_pg_loss_gradient`\n\n"
           "$$w \\tag{T.4}$$\n\nno reference line\n")
    entries, problems = parse_map(bad)
    problems += check_entries(entries)
    text = "\n".join(problems)
    assert "pgnumpy/no_such_file.py does not exist" in text
    assert "tests/test_nn.py has no no_such_test" in text
    assert "pgnumpy/objectives.py has no no_such_function" in text
    assert "docstring of pgnumpy/objectives.py::pg_loss does not name T.3" in text
    assert "(T.4): no 'code: ... · test: ...' line" in text


# ---- rendering on GitHub ------------------------------------------------------------------

def render_problems(text: str) -> list[str]:
    """Constructs GitHub's markdown math breaks on (that we know of)."""
    problems = []
    in_code = in_display = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        stripped = re.sub(r"`[^`]*`", "", line).strip()  # code spans are not math
        if "$$" in stripped:
            if stripped.count("$$") == 2 and stripped.startswith("$$") and stripped.endswith("$$"):
                block = stripped
            elif stripped == "$$":
                in_display = not in_display
                continue
            else:
                problems.append(f"line {n}: $$ must open and close a block on its own line")
                continue
            if block.count("\\tag{") > 1:
                problems.append(f"line {n}: \\tag twice in one block")
            continue
        if in_display:
            continue
        if "\\tag{" in line:
            problems.append(f"line {n}: \\tag outside display math")
        for bad in ("\\begin{align", "\\begin{equation", "\\newcommand", "\\def\\", "\\label{",
                    "\\eqref{", "\\ref{"):
            if bad in line:
                problems.append(f"line {n}: {bad} is not supported here")
        inline = re.sub(r"`[^`]*`", "", line)  # code spans are not math
        if inline.count("$") % 2:
            problems.append(f"line {n}: unbalanced $")
        for m in re.findall(r"\$([^$]+)\$", inline):
            if "\\\\" in m:
                problems.append(f"line {n}: \\\\ line break inside inline math")
            if re.search(r"_\*|\*_", m) or re.search(r"_\{[^}]*\}[^$]*\*", m) and "\\*" not in m:
                if "_" in m and "*" in m:
                    problems.append(f"line {n}: '_' and '*' in one inline formula (markdown "
                                    "may read them as emphasis)")
    if in_display:
        problems.append("an unclosed $$ block")
    return problems


@pytest.mark.parametrize("md", sorted(DERIV.glob("*.md")), ids=lambda p: p.name)
def test_derivation_renders_on_github(md):
    problems = render_problems(md.read_text())
    assert not problems, "\n".join(problems)


def test_the_render_check_catches_bad_markdown():
    bad = ("\\begin{align} x \\end{align}\n"
           "text $a = b\n"
           "$$x \\tag{A} \\tag{B}$$\n"
           "see \\eqref{A} and \\newcommand{\\R}{x}\n"
           "inline $a \\\\ b$ here\n"
           "$$ x $$ trailing\n")
    text = "\n".join(render_problems(bad))
    for needle in ["\\begin{align is not supported", "unbalanced $", "\\tag twice",
                   "\\eqref{ is not supported", "\\newcommand is not supported",
                   "line break inside inline math", "$$ must open and close"]:
        assert needle in text, needle
