"""Issue 22, item 8: every folder that ships (the package, the console's templates and static
files, the perl host under bridge.perl) is declared in pyproject.toml, so a current setuptools
builds without its "Package would be ignored" warnings, and declares its data files."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_folder_is_a_declared_package_with_its_data() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]

    def folder_of(name: str) -> Path:  # as setuptools maps it: through the longest remapped prefix
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in conf["package-dir"]:
                return ROOT / conf["package-dir"][".".join(parts[:n])] / "/".join(parts[n:])
        return ROOT / "/".join(parts)

    dirs = {name: folder_of(name) for name in conf["packages"]}
    for name, prefix in conf["package-dir"].items():  # folders under a remapped package
        for sub in (ROOT / prefix).rglob("*"):
            if sub.is_dir() and sub.name != "__pycache__" and any(p.is_file() for p in sub.iterdir()):
                assert f"{name}.{'.'.join(sub.relative_to(ROOT / prefix).parts)}" in conf["packages"], sub
    for sub in (ROOT / "bridge").rglob("*"):
        if sub.is_dir() and sub.name != "__pycache__" and any(p.is_file() for p in sub.iterdir()):
            assert ".".join(sub.relative_to(ROOT).parts) in conf["packages"], sub
    data = conf["package-data"]
    for name, folder in dirs.items():
        for f in folder.iterdir():
            if f.is_file() and f.suffix not in (".py", ".pyc"):
                assert any(f.match(pattern) for pattern in data.get(name, [])), f"{f} is not package data of {name}"
