"""Where a model's weights come from: ``toy:NAME`` (a model shipped in the package), a local transformers folder,
or a hub id (left to the library to resolve)."""

from __future__ import annotations

from pathlib import Path

from ..toy import model_path


def resolve_path(path: str) -> str:
    """``toy:NAME`` names a shipped toy model; a local folder must exist; anything else is a hub id."""
    if path.startswith("toy:"):
        return str(model_path(path[4:]))
    local = Path(path).expanduser()
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") > 1:
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"model path {path!r} has no config.json: point it at a transformers model folder, a hub id, "
                "or toy:target / toy:draft"
            )
        return str(local)
    return path


def resolve_dtype(dtype: str, device: str):
    """The torch dtype a recipe's ``dtype`` names on ``device`` (auto: bfloat16 on a GPU, float32 on a CPU)."""
    import torch  # the sources are read before any model loads

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16") from None
