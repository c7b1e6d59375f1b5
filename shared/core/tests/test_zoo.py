"""Tests of ``subspace_core.zoo``: PretrainedCfg, checkpoints, source resolution, registry."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from subspace_core import plugins
from subspace_core.io import ChecksumError, sha256_bytes, sha256_file
from subspace_core.zoo import (
    CheckpointNotFound,
    PretrainedCfg,
    count_parameters,
    create_model,
    get_model_entry,
    list_models,
    load,
    load_state_dict,
    register_model,
    resolve_checkpoint,
    save_state_dict,
)
from subspace_core.zoo import registry as zoo_registry

FILE = "tiny_linear.safetensors"


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Private model registry, no plugin imports, and a private $SUBZOO_HOME."""
    monkeypatch.setattr(zoo_registry, "_REGISTRY", dict(zoo_registry._REGISTRY))
    monkeypatch.setattr(
        plugins, "_loaded", set(plugins._loaded) | set(plugins.available_plugins())
    )
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path / "home"))


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _build(**kwargs) -> nn.Module:
    """Tiny 3→2 linear layer."""
    return nn.Linear(3, 2, **kwargs)


def _weights(offset: float = 0.0) -> dict[str, torch.Tensor]:
    return {
        "weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) + offset,
        "bias": torch.tensor([0.5, -0.5]) + offset,
    }


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _cfg(sha256: str, num_bytes: int = 100, **overrides) -> PretrainedCfg:
    fields = {
        "file": FILE,
        "sha256": sha256,
        "num_bytes": num_bytes,
        "num_params": 8,
        "license": "Apache-2.0",
        "paper": "none (test)",
        "recipe": "some.module:train",
        "metrics": {"test_proto": {"acc": 50.0}},
        "data": {"input_shape": [3], "nested": {"a": 1}},
    }
    fields.update(overrides)
    return PretrainedCfg(**fields)


def _register(cfg: PretrainedCfg | None, model_id: str | None = None) -> str:
    model_id = model_id or f"test/{_unique('lin_')}.tiny"
    register_model(model_id, pretrained_cfg=cfg, protocols=("test_proto",) if cfg else ())(_build)
    return model_id


def _flip_byte(path: Path, index: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def good_file(tmp_path) -> tuple[Path, str]:
    """A genuine checkpoint (outside every source location) and its sha256."""
    path = tmp_path / "src" / FILE
    digest = save_state_dict(_weights(), path)
    return path, digest


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Build an importable package in tmp_path, optionally shipping a weights file."""
    created: list[str] = []

    def make(payload: bytes | None, file: str = FILE) -> str:
        name = _unique("zoo_weights_pkg_")
        pkg = tmp_path / "pkgs" / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        if payload is not None:
            (pkg / file).write_bytes(payload)
        monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
        created.append(name)
        return name

    yield make
    for name in created:
        sys.modules.pop(name, None)


def _cache_dir() -> Path:
    from subspace_core.io import subzoo_home

    return subzoo_home() / "weights"


def _assert_is_weights(model: nn.Module, offset: float = 0.0) -> None:
    expected = _weights(offset)
    assert torch.equal(model.weight.detach(), expected["weight"])
    assert torch.equal(model.bias.detach(), expected["bias"])


# --- PretrainedCfg -------------------------------------------------------------------------


def test_zoo_cfg_valid_and_to_dict():
    cfg = _cfg("a" * 64, url="https://example.org/w.safetensors")
    d = cfg.to_dict()
    assert d["sha256"] == "a" * 64
    assert d["metrics"] == {"test_proto": {"acc": 50.0}}
    assert d["data"] == {"input_shape": [3], "nested": {"a": 1}}
    assert d["url"] == "https://example.org/w.safetensors"
    json.dumps(d)  # plain JSON


def test_zoo_cfg_hub_remote_url():
    cfg = _cfg("a" * 64, hub_repo="org/repo", revision="1" * 40)
    assert cfg.remote_url == f"https://huggingface.co/org/repo/resolve/{'1' * 40}/{FILE}"
    assert _cfg("a" * 64).remote_url is None
    # an explicit url wins over the hub
    both = _cfg("a" * 64, hub_repo="org/repo", revision="1" * 40, url="https://x.org/f")
    assert both.remote_url == "https://x.org/f"


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"sha256": "abc"}, "sha256"),
        ({"sha256": "A" * 64}, "sha256"),  # uppercase refused
        ({"sha256": "g" * 64}, "sha256"),
        ({"file": "weights.pt"}, "file"),
        ({"file": "weights.bin"}, "file"),
        ({"license": ""}, "license"),
        ({"paper": ""}, "paper"),
        ({"recipe": ""}, "recipe"),
        ({"recipe": "module_without_function"}, "recipe"),
        ({"num_bytes": 0}, "num_bytes"),
        ({"num_params": -1}, "num_params"),
        ({"hub_repo": "org/repo"}, "revision"),
        ({"hub_repo": "org/repo", "revision": "main"}, "revision"),
        ({"hub_repo": "org/repo", "revision": "1" * 39}, "revision"),
        ({"hub_repo": "org/repo", "revision": "G" * 40}, "revision"),
        ({"metrics": {}}, "metrics"),
        ({"metrics": {"test_proto": {}}}, "metrics"),
        ({"data": {}}, "data"),
    ],
)
def test_zoo_cfg_validation(overrides, names):
    sha = overrides.pop("sha256", "a" * 64)
    with pytest.raises(ValueError, match=names):
        _cfg(sha, **overrides)


def test_zoo_cfg_is_immutable():
    metrics = {"test_proto": {"acc": 50.0}}
    data = {"nested": {"a": 1}}
    cfg = _cfg("a" * 64, metrics=metrics, data=data)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sha256 = "b" * 64
    with pytest.raises(TypeError):
        cfg.metrics["test_proto"] = {"acc": 100.0}
    with pytest.raises(TypeError):
        cfg.metrics["test_proto"]["acc"] = 100.0
    with pytest.raises(TypeError):
        cfg.data["nested"]["a"] = 2
    # the caller's dicts are copied: mutating them does not reach the config
    metrics["test_proto"]["acc"] = 0.0
    data["nested"]["a"] = 99
    assert cfg.metrics["test_proto"]["acc"] == 50.0
    assert cfg.data["nested"]["a"] == 1


# --- checkpoint files ----------------------------------------------------------------------


def test_zoo_save_state_dict_atomic_with_sidecar(tmp_path):
    path = tmp_path / "ck" / FILE
    shared = torch.arange(4.0)
    state = {"a": shared, "b": shared.view(2, 2).t()}  # aliased, non-contiguous
    digest = save_state_dict(state, path, metadata={"epoch": 3, "note": "x"})
    assert digest == sha256_file(path)
    assert (tmp_path / "ck" / (FILE + ".sha256")).read_text() == f"{digest}  {FILE}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([FILE, FILE + ".sha256"])
    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()["subzoo"]) == {"epoch": 3, "note": "x"}
    loaded = load_state_dict(path, sha256=digest)
    assert torch.equal(loaded["a"], state["a"]) and torch.equal(loaded["b"], state["b"])
    assert count_parameters(loaded) == 8


def test_zoo_save_state_dict_is_byte_reproducible(tmp_path):
    state = {f"w{i}": torch.randn(3, 3) for i in range(6)}
    meta = {f"k{i}": i for i in range(8)}
    digests = {save_state_dict(state, tmp_path / f"{i}.safetensors", metadata=meta) for i in range(3)}
    assert len(digests) == 1


def test_zoo_load_state_dict_refuses_flipped_byte(good_file):
    path, digest = good_file
    _flip_byte(path)
    with pytest.raises(ChecksumError) as info:
        load_state_dict(path, sha256=digest)
    text = str(info.value)
    assert str(path) in text and digest in text and sha256_file(path) in text


def test_zoo_load_state_dict_refuses_wrong_pin(good_file):
    path, digest = good_file
    with pytest.raises(ChecksumError, match=digest):
        load_state_dict(path, sha256="0" * 64)


# --- registry ------------------------------------------------------------------------------


def test_zoo_register_and_create_model_random_init():
    model_id = _register(None)
    model = create_model(model_id)
    assert isinstance(model, nn.Linear) and model.in_features == 3
    # builder kwargs pass through
    assert create_model(model_id, bias=False).bias is None
    entry = get_model_entry(model_id)
    assert entry.area == "test" and not entry.has_pretrained
    assert entry.description == "Tiny 3→2 linear layer."
    assert entry.to_dict()["pretrained_cfg"] is None


def test_zoo_register_model_validation():
    with pytest.raises(ValueError, match="model_id"):
        register_model("Test/Upper.case")
    with pytest.raises(ValueError, match="model_id"):
        register_model("test/no_tag")
    with pytest.raises(ValueError, match="protocols"):
        register_model("test/lin_x.tiny", pretrained_cfg=_cfg("a" * 64))
    with pytest.raises(ValueError, match="other_proto"):
        register_model(
            "test/lin_x.tiny",
            pretrained_cfg=_cfg("a" * 64, metrics={"other_proto": {"acc": 1.0}}),
            protocols=("test_proto",),
        )


def test_zoo_duplicate_registration_errors():
    model_id = _register(None)
    with pytest.raises(ValueError, match="already registered"):
        register_model(model_id)(_build)
    assert get_model_entry(model_id).builder is _build


def test_zoo_unknown_id_error_messages():
    model_id = _register(None, "test/known_model.tiny")
    with pytest.raises(KeyError) as info:
        get_model_entry("test/known_model.other")
    assert "test/known_model.other" in str(info.value)
    assert "did you mean" in str(info.value) and model_id in str(info.value)
    with pytest.raises(KeyError) as info:
        create_model("test/nothing_like_it.x")
    assert "not registered" in str(info.value) and "known ids" in str(info.value)


def test_zoo_list_models_filters():
    with_ckpt = _register(_cfg("a" * 64), "test/zlist_a.tiny")
    without = _register(None, "test/zlist_b.tiny")
    other = _register(None, "test/other_c.tiny")
    assert list_models("test/zlist_*") == [with_ckpt, without]
    assert list_models("test/zlist_*", pretrained=True) == [with_ckpt]
    assert list_models("test/zlist_*", pretrained=False) == [without]
    assert list_models("test/*") == sorted([with_ckpt, without, other])
    assert list_models("*other*") == [other]
    assert list_models("nomatch/*") == []
    assert with_ckpt in list_models()


def test_zoo_list_models_unknown_package():
    with pytest.raises(plugins.PluginError, match="package"):
        list_models(package="no_such_area_xyz")


def test_zoo_pretrained_without_checkpoint_errors():
    model_id = _register(None)
    with pytest.raises(ValueError, match="no shipped checkpoint"):
        create_model(model_id, pretrained=True)


# --- sources: explicit file ----------------------------------------------------------------


def test_zoo_explicit_file_loads_and_uses_sidecar(good_file):
    path, digest = good_file
    # the cfg pins another hash: the sidecar beside the explicit file is what counts
    model_id = _register(_cfg("f" * 64))
    model = create_model(model_id, checkpoint_path=path)
    _assert_is_weights(model)
    resolved = resolve_checkpoint(get_model_entry(model_id).pretrained_cfg, path)
    assert (resolved.source, resolved.sha256, resolved.path) == ("explicit file", digest, path)


def test_zoo_explicit_file_without_sidecar_uses_cfg_hash(good_file):
    path, digest = good_file
    path.with_name(path.name + ".sha256").unlink()
    _assert_is_weights(load(_register(_cfg(digest)), checkpoint_path=path))
    with pytest.raises(ChecksumError):
        load(_register(_cfg("f" * 64)), checkpoint_path=path)


def test_zoo_explicit_sha256_argument_wins(good_file):
    path, digest = good_file
    model_id = _register(_cfg(digest))
    with pytest.raises(ChecksumError, match="e" * 64):
        create_model(model_id, checkpoint_path=path, sha256="e" * 64)
    _assert_is_weights(create_model(model_id, checkpoint_path=path, sha256=digest))


def test_zoo_explicit_file_flipped_byte_refused(good_file):
    path, digest = good_file
    model_id = _register(_cfg(digest))
    _flip_byte(path)
    actual = sha256_file(path)
    for call in (
        lambda: create_model(model_id, pretrained=True, checkpoint_path=path),
        lambda: load(model_id, checkpoint_path=path),
    ):
        with pytest.raises(ChecksumError) as info:
            call()
        text = str(info.value)
        assert str(path) in text and digest in text and actual in text


def test_zoo_explicit_missing_file(tmp_path):
    model_id = _register(_cfg("a" * 64))
    with pytest.raises(CheckpointNotFound, match="checkpoint_path"):
        create_model(model_id, checkpoint_path=tmp_path / "nope.safetensors")


def test_zoo_explicit_beats_package_and_cache(good_file, make_package):
    path, digest = good_file
    other = path.parent / "other" / FILE
    other_digest = save_state_dict(_weights(offset=10.0), other)
    package = make_package(path.read_bytes())
    cache = _cache_dir() / FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    model_id = _register(_cfg(digest, package=package))
    model = load(model_id, checkpoint_path=other, sha256=other_digest)
    _assert_is_weights(model, offset=10.0)
    assert not model.training


# --- sources: package file -----------------------------------------------------------------


def test_zoo_package_file_loads(good_file, make_package):
    path, digest = good_file
    package = make_package(path.read_bytes())
    model_id = _register(_cfg(digest, package=package))
    _assert_is_weights(create_model(model_id, pretrained=True))
    resolved = resolve_checkpoint(get_model_entry(model_id).pretrained_cfg)
    assert resolved.source == "package file"
    assert resolved.path.name == FILE and package in str(resolved.path)


def test_zoo_package_file_flipped_byte_refused(good_file, make_package, tmp_path):
    path, digest = good_file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    package = make_package(bytes(data))
    shipped = tmp_path / "pkgs" / package / FILE
    # a good copy in the cache must NOT be used silently instead of the tampered package file
    cache = _cache_dir() / FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    model_id = _register(_cfg(digest, package=package))
    for call in (lambda: create_model(model_id, pretrained=True), lambda: load(model_id)):
        with pytest.raises(ChecksumError) as info:
            call()
        text = str(info.value)
        assert str(shipped) in text and digest in text and sha256_bytes(bytes(data)) in text


def test_zoo_package_beats_cache(good_file, make_package):
    path, digest = good_file
    package = make_package(path.read_bytes())
    cache = _cache_dir() / FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"garbage that would fail the hash")
    model_id = _register(_cfg(digest, package=package))
    _assert_is_weights(load(model_id))
    assert resolve_checkpoint(get_model_entry(model_id).pretrained_cfg).source == "package file"


def test_zoo_package_without_file_or_missing_falls_through_to_cache(good_file, make_package):
    path, digest = good_file
    cache = _cache_dir() / FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    empty_package = make_package(None)
    for package in (empty_package, "no_such_package_" + uuid.uuid4().hex[:8]):
        cfg = _cfg(digest, package=package)
        assert resolve_checkpoint(cfg).source == "cache"
        _assert_is_weights(load(_register(cfg)))


# --- sources: cache ------------------------------------------------------------------------


def test_zoo_cache_loads(good_file, http_server):
    path, digest = good_file
    base, _, hits = http_server
    cache = _cache_dir() / FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    model_id = _register(_cfg(digest, url=f"{base}/{FILE}"))
    _assert_is_weights(load(model_id))
    assert hits == []  # the cache beats the URL
    resolved = resolve_checkpoint(get_model_entry(model_id).pretrained_cfg)
    assert (resolved.source, resolved.path) == ("cache", cache)


def test_zoo_cache_flipped_byte_refused(good_file, http_server):
    path, digest = good_file
    base, routes, hits = http_server
    routes[f"/{FILE}"] = path.read_bytes()  # a good remote copy must not be used silently
    cache = _cache_dir() / FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    _flip_byte(cache, index=len(cache.read_bytes()) // 2)
    actual = sha256_file(cache)
    model_id = _register(_cfg(digest, url=f"{base}/{FILE}"))
    for call in (lambda: create_model(model_id, pretrained=True), lambda: load(model_id)):
        with pytest.raises(ChecksumError) as info:
            call()
        text = str(info.value)
        assert str(cache) in text and digest in text and actual in text
    assert hits == []


# --- sources: URL --------------------------------------------------------------------------


def test_zoo_url_download_is_cached_and_loaded(good_file, http_server):
    path, digest = good_file
    base, routes, hits = http_server
    routes[f"/{FILE}"] = path.read_bytes()
    model_id = _register(_cfg(digest, url=f"{base}/{FILE}"))
    _assert_is_weights(create_model(model_id, pretrained=True, progress=False))
    cache = _cache_dir() / FILE
    assert cache.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in cache.parent.iterdir()) == [FILE]
    assert hits == [f"/{FILE}"]
    # second load comes from the cache, no new request
    _assert_is_weights(load(model_id))
    assert hits == [f"/{FILE}"]


def test_zoo_url_wrong_bytes_refused_and_not_cached(good_file, http_server):
    path, digest = good_file
    base, routes, _ = http_server
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    routes[f"/{FILE}"] = bytes(data)
    url = f"{base}/{FILE}"
    model_id = _register(_cfg(digest, url=url))
    with pytest.raises(ChecksumError) as info:
        create_model(model_id, pretrained=True, progress=False)
    text = str(info.value)
    assert url in text and digest in text and sha256_bytes(bytes(data)) in text
    cache_dir = _cache_dir()
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []
    with pytest.raises(ChecksumError):
        load(model_id)
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


def test_zoo_url_dead_port_lists_what_was_tried(good_file, make_package):
    _, digest = good_file
    package = make_package(None)
    url = f"http://127.0.0.1:{_dead_port()}/{FILE}"
    model_id = _register(_cfg(digest, package=package, url=url))
    with pytest.raises(CheckpointNotFound) as info:
        create_model(model_id, pretrained=True, progress=False)
    text = str(info.value)
    assert FILE in text and digest in text
    assert f"package file {package}/{FILE}" in text
    assert f"cache {_cache_dir() / FILE}" in text
    assert f"download {url}" in text
    assert text.index("package file") < text.index("cache") < text.index("download")
    assert isinstance(info.value, FileNotFoundError)
    assert not _cache_dir().exists() or list(_cache_dir().iterdir()) == []


def test_zoo_no_remote_configured_lists_what_was_tried(good_file):
    _, digest = good_file
    with pytest.raises(CheckpointNotFound, match="no url or hub_repo"):
        load(_register(_cfg(digest)))


def test_zoo_http_404_is_checkpoint_not_found(good_file, http_server):
    _, digest = good_file
    base, _, _ = http_server
    with pytest.raises(CheckpointNotFound, match="404"):
        load(_register(_cfg(digest, url=f"{base}/missing.safetensors")))


def test_zoo_strict_shapes(tmp_path):
    path = tmp_path / FILE
    digest = save_state_dict({"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, path)
    model_id = _register(_cfg(digest))
    with pytest.raises(RuntimeError, match="size mismatch"):
        create_model(model_id, checkpoint_path=path)
