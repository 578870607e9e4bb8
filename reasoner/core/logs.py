"""Process-wide logging settings for the libraries we drive: their progress bars and warnings are not ours to
print (the CLI and every worker process of an eval call ``quiet_libraries``)."""

from __future__ import annotations

import logging
import os
import sys


def quiet_libraries() -> None:
    """Silence transformers' and the hub's progress bars and warnings, and math-verify's timeouts, without
    importing them: the environment is read when they are first imported; if they already are, they are told."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
