"""mypy over the package, as installed names (``loopline.*``), with the config in pyproject.toml.

The folders install under ``loopline`` through a package-dir mapping that mypy
cannot follow, so the test builds a tree of symlinks (``loopline/processors`` →
``processors/``, ...) in a temp folder and checks ``-p loopline.*`` there.

Two checks: the package passes with the configured relaxations, and every module
in the documented "not yet" list still needs it (so the list only shrinks).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("streams", "processors", "connectors", "schemas", "policies")
PACKAGES = ("loopline.processors", "loopline.streams", "loopline.connectors")

pytestmark = pytest.mark.skipif(shutil.which("mypy", path=str(Path(sys.executable).parent)) is None,
                                reason="mypy is installed by the test extras")


def _tree(tmp: Path) -> Path:
    (tmp / "loopline").mkdir()
    for name in FOLDERS:
        (tmp / "loopline" / name).symlink_to(REPO / name, target_is_directory=True)
    return tmp


def _mypy(tree: Path, config: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tree / ".mypy_cache")]
    for p in PACKAGES:
        args += ["-p", p]
    return subprocess.run(args, cwd=tree, capture_output=True, text=True, timeout=900)


def _relaxed(project: dict) -> set[str]:
    out: set[str] = set()
    for o in project["tool"]["mypy"].get("overrides", []):
        if o.get("ignore_errors"):
            out.update(o["module"])
    return out


def test_types_check_and_the_relaxed_list_only_shrinks(tmp_path):
    """One mypy run without the "not yet" override: errors only in listed modules, and every listed module has some.

    Equivalent to running with the override (``ignore_errors`` only hides errors
    reported in the listed modules) and checking that no listed module passes
    already, at the cost of one run.
    """
    relaxed = _relaxed(tomllib.loads((REPO / "pyproject.toml").read_text()))
    text = (REPO / "pyproject.toml").read_text()
    cut = text.index("# Not yet: modules that still have type errors")
    cfg = tmp_path / "mypy.toml"
    cfg.write_text(text[:cut])
    tree = tmp_path / "tree"
    tree.mkdir()
    r = _mypy(_tree(tree), cfg)
    failing = {re.sub(r"(/__init__)?\.py$", "", m).replace("/", ".")
               for m in re.findall(r"^(loopline/[^:]+\.py):\d+: error", r.stdout, flags=re.M)}
    assert "Found" in r.stdout or r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    new_errors = sorted(failing - relaxed)
    assert new_errors == [], "type errors outside the relaxed list:\n" + "\n".join(
        line for line in r.stdout.splitlines() if any(line.startswith(m.replace(".", "/")) for m in new_errors))
    assert sorted(relaxed - failing) == [], "these modules pass now: remove them from the relaxed list"
