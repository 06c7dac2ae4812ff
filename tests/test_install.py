"""Installing anywhere: `ombridge init`, and a real wheel in a fresh venv, run from `/`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import EXAMPLE, ROOT, wait_for

from bridge import bundled, store
from bridge.errors import UsageError
from bridge.home import Home, is_home
from bridge.setup.newhome import create_home


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_init_creates_a_home_with_the_bundled_example_owner_only(tmp_path: Path) -> None:
    home = create_home(tmp_path / "new" / "home")
    assert home.root == tmp_path / "new" / "home" and is_home(home.root)
    assert home.script.read_bytes() == bundled.example_script().read_bytes()
    assert _mode(home.script) == 0o600
    assert {d.name: _mode(d) for d in (home.datafiles, home.log_dir, home.run_dir)} == {
        "datafiles": 0o700, "log": 0o700, "run": 0o700}
    assert home.tmp.is_dir() and _mode(home.db) == 0o600
    conn = store.connect(home, create=False)
    try:  # the backsync subscriber exists from the start: a close has somewhere to go
        assert conn.execute("SELECT count(*) FROM subscribers WHERE system = 1 AND action = 'backsync'").fetchone()[0] == 1
    finally:
        conn.close()


def test_init_accepts_an_existing_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert create_home(tmp_path / "empty").script.is_file()


@pytest.mark.parametrize("existing", ["conf/backsync/OMBackSync.pl", "datafiles/ombridge.db"])
def test_init_never_overwrites_a_home(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).parent.mkdir(parents=True)
    (tmp_path / existing).write_bytes(b"years of work\n")
    before = _tree(tmp_path)
    with pytest.raises(UsageError, match=f"^{tmp_path} is already an ombridge home$"):
        create_home(tmp_path)
    assert _tree(tmp_path) == before and (tmp_path / existing).read_bytes() == b"years of work\n"


def test_init_refuses_a_non_empty_folder_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(UsageError, match="is not empty"):
        create_home(tmp_path)
    with pytest.raises(UsageError, match="exists and is not a directory"):
        create_home(tmp_path / "notes.txt")
    assert _tree(tmp_path) == ["notes.txt"]


def test_init_cli_says_what_it_did_and_refuses_in_one_sentence(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "bridge"]
    made = subprocess.run([*cli, "init", str(tmp_path / "h")], capture_output=True, text=True, cwd="/")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"created home {tmp_path / 'h'}: edit {tmp_path / 'h'}/conf/backsync/OMBackSync.pl")
    again = subprocess.run([*cli, "init", str(tmp_path / "h")], capture_output=True, text=True)
    assert (again.returncode, again.stdout) == (2, "")
    assert again.stderr == f"ombridge: error: {tmp_path / 'h'} is already an ombridge home\n"
    unnamed = subprocess.run([*cli, "init", ""], capture_output=True, text=True, cwd=tmp_path)
    assert (unnamed.returncode, unnamed.stdout) == (2, "")
    assert unnamed.stderr == "ombridge: error: name the directory of the new home, e.g. ombridge init /var/opt/ombridge\n"


def test_the_perl_side_is_found_in_the_checkout_of_an_editable_install() -> None:
    # The Makefile installs editable in setuptools' compat mode: no bridge.perl package exists.
    assert bundled.perl_dir() == ROOT / "perl"


# -- a real wheel ---------------------------------------------------------------------------------

def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel built from the sdist, as `python -m build` makes them."""
    out = tmp_path_factory.mktemp("dist")
    # From a copy: building writes ombridge.egg-info into the source, which the editable install
    # of the tests' own venv reads its metadata from.
    src = tmp_path_factory.mktemp("src") / "ombridge"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis",
        "datafiles", "tmp", "log", "run"))
    # --no-isolation: the test venv's setuptools and wheel, instead of fetching them for a build env.
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)])
    return out


@pytest.mark.xdist_group("wheel")  # one build of the wheel, on one worker
def test_the_sdist_and_the_wheel_carry_the_perl_host_and_the_example(dist: Path) -> None:
    (wheel,) = dist.glob("ombridge-*.whl")
    (sdist,) = dist.glob("ombridge-*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"bridge/perl/ombridge_host.pl", "bridge/perl/check/OMBridgeCheck.pm", "bridge/example/OMBackSync.pl",
            "bridge/web/console/templates/base.html", "bridge/web/console/static/console.css", "bridge/cli/__init__.py",
            "bridge/py.typed"} <= names
    with tarfile.open(sdist) as tar:
        top = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"perl/ombridge_host.pl", "perl/check/OMBridgeCheck.pm", "conf/backsync/OMBackSync.pl", "bridge/cli/__init__.py", "pyproject.toml"} <= top


@pytest.mark.xdist_group("wheel")
def test_the_wheel_installs_into_a_fresh_venv_and_runs_from_the_root_directory(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("ombridge-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    # The dependencies come from the index (pip's cache after the first run); ombridge from the wheel.
    # --no-compile, and bytecode allowed below: only what the commands import gets compiled, once.
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
          "--disable-pip-version-check", "--no-compile", str(wheel)])
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMBRIDGE_HOME", "OvDataDir", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    ombridge = str(venv / "bin" / "ombridge")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _run([ombridge, *args], cwd="/", env=env)

    where = _run([str(venv / "bin" / "python"), "-c",
                  "import bridge, bridge.bundled as b, bridge.ombacksync.perlhost as p\n"
                  "print(bridge.__file__, p.HOST_SCRIPT, b.example_script())"],
                 cwd="/", env=env).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where  # nothing comes from the checkout

    home_dir = tmp_path / "home"
    assert "created home" in run("init", str(home_dir)).stdout
    home = Home(home_dir)
    assert home.script.read_bytes() == Path(where[2]).read_bytes()
    shutil.copy(EXAMPLE, home.script)  # behaviour is asserted on the tests' own copy
    assert run("--home", str(home_dir), "check").stdout == f"{home.script} syntax OK\n"
    assert run("--home", str(home_dir), "try", "T-1", "T 2").stdout.splitlines() == ["OK   T-1", "OK   T 2"]
    run("--home", str(home_dir), "start")
    try:
        run("--home", str(home_dir), "close", "C-1")
        wait_for(lambda: home.output.read_text().endswith(" Close C-1\n"), what="the close reached the script")
        assert "running" in run("--home", str(home_dir), "status").stdout
    finally:
        run("--home", str(home_dir), "stop")
    lines = home.output.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["Init", "Close T-1", "Close T 2", "Init", "Close C-1"]
