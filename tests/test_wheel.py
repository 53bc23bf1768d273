"""evalkit installed from its wheel, away from the checkout: the specs ship inside the package,
and results, reports and caches go to the current folder / the cache, never into the install.

The wheel is built from a copy of the checkout's package sources (so the build leaves no
``build/`` or ``*.egg-info`` behind) with this interpreter's setuptools, installed with
``pip install --no-deps --target`` into a temporary folder outside the checkout, and run through
its console script with ``PYTHONPATH=<target>`` from an unrelated folder (torch and the other
dependencies come from this venv; the checkout is not on the import path).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import USER_MODULE

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "evalkit", "reference_models"]


def _files(folder: Path) -> set[str]:
    """Every file under ``folder`` but Python's own bytecode caches."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents, "the install must lie outside the checkout"
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(p, src / name)
    whl, target = base / "whl", base / "target"
    pip = [sys.executable, "-m", "pip"]
    # absolute paths: pip reads a bare word as a package name on the index
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(whl), str(src.resolve())],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = sorted(whl.glob("*.whl"))
    assert [w.name for w in wheels] == ["evalkit_gen-0.1.0-py3-none-any.whl"], wheels
    r = subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheels[0])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    work, home = base / "work", base / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALKIT_", "PYTHON", "XDG_"))}
    env.update(PYTHONPATH=str(target), HOME=str(home), EVALKIT_CACHE=str(base / "cache"), EVALKIT_DATA=str(base / "data"),
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return {"base": base, "target": target, "work": work, "env": env, "wheel": wheels[0]}


def _run(inst: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The installed console script ``evalkit ARGS`` in the unrelated work folder."""
    r = subprocess.run([sys.executable, str(inst["target"] / "bin" / "evalkit"), *args], cwd=inst["work"], env=inst["env"],
                       capture_output=True, text=True, timeout=timeout)
    return r


def test_wheel_ships_the_specs(installed):
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    specs = sorted(n for n in names if n.startswith("evalkit/specs/"))
    in_checkout = sorted(f"evalkit/specs/{p.name}" for p in (ROOT / "evalkit" / "specs").glob("*.toml"))
    assert specs == in_checkout and "evalkit/specs/demo.toml" in specs
    assert "evalkit/data/manifests.json" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(installed["wheel"]).read(meta).decode()
    assert "Name: evalkit-gen" in text and "Requires-Dist: torch<3,>=2.13" in text, text[:800]


def test_installed_evalkit_lists_and_runs_the_demo_from_an_unrelated_folder(installed):
    target, work = installed["target"], installed["work"]
    r = subprocess.run([sys.executable, "-c", "import evalkit, reference_models, importlib.metadata as m; "
                        "print(evalkit.__file__); print(reference_models.__file__); print(m.version('evalkit-gen'))"],
                       cwd=work, env=installed["env"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ek, rm, version = r.stdout.split()
    assert Path(ek).parent == target / "evalkit" and Path(rm).parent == target / "reference_models", r.stdout
    assert version == "0.1.0"

    installed_files = _files(target)
    r = _run(installed, "list")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("demo", "parzen", "sample-quality", "emotion"):
        assert f"\n  {name} " in r.stdout, (name, r.stdout[:2000])

    r = _run(installed, "run", "demo", "--epochs", "1", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unknown benchmark" not in r.stdout + r.stderr
    # everything written lies in the current folder and the cache; the install is untouched
    assert (work / "results" / "demo.jsonl").is_file() and (work / "reports" / "demo.md").is_file()
    assert (work / "reports" / "demo.tex").is_file()
    assert any((installed["base"] / "cache" / "runs").iterdir())
    assert _files(target) == installed_files, sorted(_files(target) ^ installed_files)
    recs = [json.loads(line) for line in (work / "results" / "demo.jsonl").read_text().splitlines()]
    assert sorted(x["row"] for x in recs) == ["aae", "gan"]
    assert all(x["provenance"]["evalkit_version"] == "0.1.0" and x["train"]["epochs"] == 1 for x in recs)

    # other folders when asked
    r = _run(installed, "report", "demo", "--results-dir", "results", "--reports-dir", "elsewhere", "--no-figures")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "elsewhere" / "demo.md").is_file()
    assert _files(target) == installed_files


def test_installed_console_script_imports_a_factory_from_the_current_folder(installed):
    """``--model my_models:build`` with ./my_models.py: no PYTHONPATH=. needed; no weights: refused
    unless --random-init."""
    (installed["work"] / "my_models_i15.py").write_text(textwrap.dedent(USER_MODULE))
    args = ["eval", "parzen", "--model", "my_models_i15:build", "--dataset", "digits", "--n-samples", "100", "--valid-limit", "50", "--json"]
    r = _run(installed, *args)
    assert r.returncode == 2 and "--random-init" in r.stderr, r.stdout + r.stderr
    r = _run(installed, *args, "--random-init")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["model"] == "my_models_i15:build"
