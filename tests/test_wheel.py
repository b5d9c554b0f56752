"""The built wheel works on its own: `pip install` it elsewhere and the shipped device
profiles, search spaces and checkpoints come with it (read with importlib.resources).

The wheel goes into a fresh virtual environment outside the checkout. Installing torch
and the rest again would take GBs and minutes, so that environment borrows this one's
third-party packages through a ``.pth`` line naming our site-packages: a plain path line
only adds the folder to ``sys.path``; it does not run that folder's own ``.pth`` files,
so the checkout's editable-install finder stays off and ``import autoprune`` can only
find the installed wheel.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    # Build from a copy of the working tree: setuptools reuses build/lib, so building in
    # the checkout could ship stale modules from an older build, and would write build/
    # and *.egg-info there. symlinks=True keeps autoprune/_data's relative links, which
    # point into the copy; the build follows them as `pip install .` does.
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "results", "*.egg-info", "__pycache__", ".pytest_cache"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", dist, src], cwd=tmp, env=env)
    (wheel,) = dist.glob("autoprune-*.whl")
    return wheel


def _borrowing_venv(path: Path, env: dict[str, str]) -> Path:
    """A fresh venv that also sees this environment's third-party packages; its python."""
    venv.create(path, with_pip=False, symlinks=os.name != "nt")
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=path, env=env).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_borrowed.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return python


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    # Nothing from the caller may lead back to the checkout or override the shipped data.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV",
                        "AUTOPRUNE_PROFILES_DIR", "AUTOPRUNE_SPACES_DIR")}
    env["AUTOPRUNE_CACHE"] = str(tmp_path / "cache")

    wheel = _build_wheel(tmp_path / "build", env)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    shipped = {f"autoprune/_data/{f.parent.name}/{f.name}"
               for f in [*REPO.glob("device_profiles/*.yaml"), *REPO.glob("search_spaces/*.yaml")]}
    shipped |= {f"autoprune/_data/search_spaces/retired/{f.name}" for f in REPO.glob("search_spaces/retired/*.yaml")}
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    assert {f"autoprune/tasks/checkpoints/{f.name}"
            for f in (REPO / "autoprune/tasks/checkpoints").iterdir()} <= names

    new = (tmp_path / "venv").resolve()
    assert not new.is_relative_to(REPO)
    python = _borrowing_venv(new, env)
    # pip also sees this environment's (editable) autoprune through the borrowed path;
    # --ignore-installed keeps it from trying to uninstall that one.
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
          "--disable-pip-version-check", wheel], cwd=tmp_path, env=env)

    work = tmp_path / "empty"
    work.mkdir()
    where = _run([python, "-c",
                  "import autoprune, autoprune.profiles as p, autoprune.space as s;"
                  "print(autoprune.__file__); print(p.profiles_dir()); print(s.spaces_dir())"],
                 cwd=work, env=env).stdout.split("\n")
    for line in where[:3]:
        assert Path(line).resolve().is_relative_to(new), where

    cli = python.parent / "autoprune"
    listed = _run([cli, "devices"], cwd=work, env=env).stdout
    assert "x86-ort" in listed and "x86-tvm" in listed

    _run([cli, "search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--latency-budget-ms", "5",
          "--trials", "2", "--results-dir", "R", "--quiet"], cwd=work, env=env)
    # a user's own profile and space, by path
    profile = work / "my-box.yaml"
    profile.write_text((REPO / "device_profiles" / "x86-ort.yaml").read_text())
    space = work / "my-space.yaml"
    space.write_text((REPO / "search_spaces" / "default.yaml").read_text())
    _run([cli, "search", "--no-finalize", "--task", "digits", "--device", profile, "--space", space,
          "--latency-budget-ms", "5", "--trials", "2", "--results-dir", "R", "--quiet"],
         cwd=work, env=env)

    studies = sorted(work.glob("R/*/trials.csv"))
    assert len(studies) == 2, studies
    for trials in studies:
        with open(trials, newline="") as fh:
            # WAITING rows are warm-start plans that were queued but not run
            ran = [row for row in csv.DictReader(fh) if row["state"] != "WAITING"]
        assert [row["state"] for row in ran] == ["COMPLETE", "COMPLETE"], trials
