"""The docs name the tree as it is: every path into the code, every `keel.…` module and name, and
every link between the pages (with its #anchor) exists."""

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A path into the repository: keel/…, flows/…, … (not one inside a run's output, like a report's docs/index.html).
PATH = re.compile(r"(?<![\w/.~-])((?:keel|flows|tasks|cli|ops|tests|benchmarks|conf|docker)/[\w./-]*[\w/]|docs/[\w-]+\.md)")
DOTTED = re.compile(r"(?<![\w./-])keel(?:\.\w+)+")
LINK = re.compile(r"\]\(([^)\s]+)\)")
SUBPACKAGES = {p.name for p in (REPO / "keel").iterdir() if (p / "__init__.py").exists()}


def code_strings() -> set[str]:
    """Every string constant in the code (MLflow tags, event names, f-string prefixes such as 'keel.gate.')."""
    strings = set()
    for folder in ("keel", "tasks", "flows", "cli", "ops"):
        for path in (REPO / folder).rglob("*.py"):
            strings |= {n.value for n in ast.walk(ast.parse(path.read_text()))
                        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("keel.")}
    return strings


STRINGS = code_strings()


def written_by_the_code(name: str) -> bool:
    """`name` is a tag or event name the code writes (`keel.verdict`, `keel.gate.p_value`, `keel.data.landed`)."""
    return any(s == name or s.startswith(name + ".") or (s.count(".") >= 2 and s.endswith(".") and name.startswith(s))
               for s in STRINGS)


def module_file(parts: list[str]) -> Path | None:
    path = REPO.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def defines(module: Path, name: str) -> bool:
    """Whether `module` defines or imports `name` at its top level (or as a class attribute)."""
    tree = ast.parse(module.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


def dotted_problem(name: str) -> str | None:
    """Why `keel.a.b.c` names nothing in the tree, or None when it does."""
    parts = name.split(".")
    if written_by_the_code(name):
        return None
    if parts[1] not in SUBPACKAGES:
        return f"{name}: keel has no sub-package {parts[1]} (and the code writes no such tag or event)"
    depth = max(i for i in range(2, len(parts) + 1) if module_file(parts[:i]) or i == 2)
    module = module_file(parts[:depth])
    if module is None:
        return f"{name}: no module {'.'.join(parts[:depth])}"
    rest = parts[depth:]
    if rest and not defines(module, rest[0]):
        return f"{name}: {module.relative_to(REPO)} defines no {rest[0]}"
    return None


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_module_and_link_exists(page):
    text = page.read_text()
    missing = sorted({p for p in PATH.findall(text) if "<" not in p and not (REPO / p).exists()})
    missing += sorted({problem for name in DOTTED.findall(text) if (problem := dotted_problem(name))})
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            missing.append(f"link {target}: no file {file}")
        elif anchor and anchor not in anchors(linked):
            missing.append(f"link {target}: no heading #{anchor} in {file or page.name}")
    assert not missing, f"{page.relative_to(REPO)} names what the tree does not have:\n" + "\n".join(missing)


def test_the_checks_see_a_wrong_path_a_wrong_name_and_a_wrong_anchor(tmp_path):
    assert not (REPO / "keel/train.py").exists() and PATH.findall("see `keel/train.py`.") == ["keel/train.py"]
    assert dotted_problem("keel.tracking.promotion.decide") is None
    assert dotted_problem("keel.tracking.promotion.no_such_function") is not None
    assert dotted_problem("keel.registry.PixelClassifier") is not None  # the module before the package move
    assert dotted_problem("keel.verdict") is None and dotted_problem("keel.gate.p_value") is None  # MLflow tags
    assert dotted_problem("keel.data.no_such_module.f") is not None
    assert "honest-splits-near-duplicate-groups" in anchors(REPO / "docs" / "datasets.md")
