"""The README stays short and true; every relative link in it and in docs/ resolves.

The producer and reviewer examples are compiled, and every ``loopline.*`` name
they import, every method they call on the objects they build, and the
arguments they pass, are checked against the real code (import, ``getattr``,
``inspect.signature(...).bind``). No broker is started: the examples are not
run, so what needs a broker (the calls actually sending) is not exercised here.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_LINES = 250
EXAMPLES = {"producer": "## Sending predictions", "reviewer": "## Answering review tasks"}
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def example_code(name: str) -> str:
    """The first ```python block of the README section of the ``name`` example."""
    section = _section(README.read_text(encoding="utf-8"), EXAMPLES[name])
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {EXAMPLES[name]!r}"
    return match.group(1)


def _bind(func, call: ast.Call, bound_self: bool) -> None:
    args = [None] * (len(call.args) + bound_self)
    kwargs = {k.arg: None for k in call.keywords if k.arg}
    inspect.signature(func).bind(*args, **kwargs)


def check_loopline_names(code: str) -> set[str]:
    """Import every ``from loopline... import X``, then check each call on X and on the
    objects ``with X(...) as obj`` builds. Returns the names checked (for the test to see)."""
    tree = ast.parse(code)
    imported: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loopline."):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                imported[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("loopline."):
                    imported[alias.asname or alias.name] = importlib.import_module(alias.name)
    instances: dict[str, type] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call, var = item.context_expr, item.optional_vars
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in imported
                        and isinstance(var, ast.Name)):
                    cls = imported[call.func.id]
                    assert hasattr(cls, "__enter__") and hasattr(cls, "__exit__"), f"{call.func.id} is no context manager"
                    instances[var.id] = cls
    checked = set(imported)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in imported:
            _bind(imported[node.func.id], node, bound_self=False)
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            owner = node.func.value.id
            target = instances.get(owner) or imported.get(owner)
            if target is None:
                continue
            assert hasattr(target, node.func.attr), f"{owner}.{node.func.attr} does not exist"
            _bind(getattr(target, node.func.attr), node, bound_self=owner in instances)
            checked.add(f"{owner}.{node.func.attr}")
    return checked


def relative_links(path: Path) -> list[str]:
    """Link targets of a Markdown file outside code blocks, without URLs and pure anchors."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def github_anchors(path: Path) -> set[str]:
    """Anchors a Markdown page offers: explicit ``<a id>`` and GitHub's heading slugs."""
    text = path.read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", _FENCE.sub("", text), re.M):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its URL
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


# ------------------------------------------------------------------ tests
def test_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    assert "python3 dev.py demo " in text and "python3 dev.py test " in text  # CI runs the test command


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_compiles_and_uses_real_names(name):
    code = example_code(name)
    compile(code, f"README:{name}", "exec")
    checked = check_loopline_names(code)
    assert {"ClientConfig"} < checked and any("." in c for c in checked), checked


def test_name_check_can_fail():
    with pytest.raises(AssertionError, match="has no"):
        check_loopline_names("from loopline.streams.settings import NoSuchThing\n")
    with pytest.raises(AssertionError, match="does not exist"):
        check_loopline_names(example_code("reviewer").replace("rc.commit()", "rc.commit_all()"))
    with pytest.raises(TypeError):
        check_loopline_names(example_code("reviewer").replace("queue=", "tier="))


def test_readme_links_docs_pages_that_exist():
    links = relative_links(README)
    assert any(t.startswith("docs/") for t in links)
    for target in links:
        assert (REPO / target.split("#")[0]).exists(), f"README links a missing file: {target}"
    pages = {p.name for p in DOCS.glob("*.md")}
    mapped = {t.split("#")[0].removeprefix("docs/") for t in links if t.startswith("docs/")}
    assert pages <= mapped, f"docs pages missing from the README's map: {sorted(pages - mapped)}"


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_docs_links_resolve(page):
    path = DOCS / page
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{page} links a missing file: {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in github_anchors(dest), f"{page} links a missing anchor: {target}"
