"""The built wheel installs one ``loopline`` package and works from outside the checkout.

Builds the wheel, installs it (``--no-deps``) into a fresh virtualenv in a temp
folder, borrows the dependencies from the project's own venv through a path
file (so the test needs no package index; ``.pth`` lines are not processed
recursively, so the checkout's editable-install hook is NOT active there), then
from another directory runs ``loopline --help``, ``loopline policy check`` on the
shipped example policy and a short ``loopline demo``.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERIC = {"streams", "processors", "connectors", "schemas", "benchmarks", "policies", "tests"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, cwd=out, timeout=300)
    (whl,) = out.glob("loopline-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = [p for p in site.getsitepackages() if p.startswith(sys.prefix)]
    Path(purelib, "loopline-test-deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300)
    return root


def _run(venv: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_") and k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def test_wheel_holds_only_the_loopline_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"loopline"}
    assert not tops & GENERIC
    assert "loopline/schemas/prediction_event.avsc" in names
    assert "loopline/policies/example.toml" in names
    assert not [n for n in names if "benchmarks" in n or n.startswith("loopline/tests")]


def test_installed_package_works_from_another_directory(venv, tmp_path):
    r = _run(venv, "python", "-c", "import loopline.processors, loopline.processors.wire.catalogue as c; "
             "print(c.__file__); print(len(c.SchemaCatalogue.load().names))", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    module_file, n_types = r.stdout.split()
    assert str(venv) in module_file and str(REPO) not in module_file  # the wheel's copy, not the checkout's
    assert int(n_types) >= 19
    r = _run(venv, "loopline", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "demo" in r.stdout
    r = _run(venv, "loopline", "policy", "example", cwd=tmp_path)
    assert r.returncode == 0
    (tmp_path / "policy.toml").write_text(r.stdout)
    r = _run(venv, "loopline", "policy", "check", "policy.toml", cwd=tmp_path)
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr


def test_short_demo_from_the_wheel(venv, tmp_path):
    r = _run(venv, "loopline", "demo", "--events", "6000", "--duration", "4", "--out", str(tmp_path / "demo"),
             cwd=tmp_path, timeout=400)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert (tmp_path / "demo" / "report.md").is_file()
