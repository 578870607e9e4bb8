"""Where a model's weights come from: ``toy:NAME`` (a model shipped in the package), a local transformers folder,
or a hub id (left to the library to resolve)."""

from __future__ import annotations

from pathlib import Path

from ..toy import model_path


def resolve_path(path: str) -> str:
    """``toy:NAME`` names a shipped toy model; a local folder must exist; anything else is a hub id, which must be in
    the hub cache or on a reachable hub (``check_hub``)."""
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


def resolve_dtype(dtype: str, device: str):
    """The torch dtype a recipe's ``dtype`` names on ``device`` (auto: bfloat16 on a GPU, float32 on a CPU)."""
    import torch  # the sources are read before any model loads

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16") from None
