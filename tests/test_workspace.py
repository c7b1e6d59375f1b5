"""Every workspace member builds alone and imports with only its declared dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def workspace_members() -> list[Path]:
    """Folders of the workspace members named by the root pyproject's globs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in config["tool"]["uv"]["workspace"]["members"]:
        members += sorted(p for p in ROOT.glob(pattern) if (p / "pyproject.toml").is_file())
    return members


MEMBERS = workspace_members()
UV = shutil.which("uv")


def _project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]


def _import_name(member: Path) -> str:
    (package,) = [p.name for p in (member / "src").iterdir() if (p / "__init__.py").is_file()]
    return package


def test_members_are_the_expected_ones():
    names = {_project(m)["name"] for m in MEMBERS}
    assert {"subspace-core", "subspace-tools"} <= names
    for member in MEMBERS:
        if member.parent.name == "packages":
            assert _project(member)["name"] == f"subspace-{member.name}"


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_member_has_static_version_and_core_range(member):
    project = _project(member)
    assert "version" in project and "dynamic" not in project
    if project["name"] != "subspace-core":
        core = [d for d in project["dependencies"] if d.startswith("subspace-core")]
        assert core and "<" in core[0], f"{project['name']}: depend on a compatible core range"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    if UV is None:
        pytest.fail("uv is not on PATH; the workspace tests need it")
    out = tmp_path_factory.mktemp("wheels")
    for member in MEMBERS:
        name = _project(member)["name"]
        subprocess.run([UV, "build", "--package", name, "--wheel", "--out-dir", str(out)],
                       cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    return out


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_wheel_ships_the_package_weights(member, wheels):
    module = _import_name(member)
    shipped = sorted(p.name for p in (member / "src" / module / "weights").glob("*.safetensors"))
    (wheel,) = wheels.glob(_project(member)["name"].replace("-", "_") + "-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in shipped:
        assert f"{module}/weights/{name}" in names, f"{wheel.name} lacks {name}"
    if module == "subspace_core":
        assert "mlp_tiny.fmnist.safetensors" in shipped


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_member_installs_and_imports_alone(member, wheels, tmp_path):
    name = _project(member)["name"]
    (wheel,) = wheels.glob(name.replace("-", "_") + "-*.whl")
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    subprocess.run([UV, "venv", "--python", sys.executable, str(venv)], check=True, env=env,
                   capture_output=True, timeout=120)
    # --find-links: sibling members are not on PyPI; everything else comes from the index.
    install = subprocess.run(
        [UV, "pip", "install", "--python", str(venv / "bin" / "python"),
         "--find-links", str(wheels), str(wheel)],
        env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    module = _import_name(member)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         f"import {module}, importlib.metadata as m; "
         f"print([e.name for e in m.entry_points(group='subzoo.plugins')])"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    if name.startswith("subspace-") and name != "subspace-tools":
        area = name.removeprefix("subspace-")
        assert area in probe.stdout, f"{name} does not expose its subzoo.plugins entry point"
