"""Token-level speculative decoding, the algorithms: drafters propose token trees, the target verifies every tree
in one forward and keeps what plain decoding would have produced (losslessly). No backend is imported here: the
transformers backend runs the decoding loop (``reasoner.backends.speculative``) with these pieces.

- ``tree.DraftTree``: what drafters return; ``verify``: the forward and the acceptance rules;
- ``cache.RaggedCache``: rows of different lengths, speculative KV kept or dropped without recomputation;
- ``adaptive``: each row's draft length chosen per step by goodput (SmartSpec);
- ``acceptance``: SpecDec++'s trained head that ends a draft chain where the target will likely reject;
- ``online``: Online Speculative Decoding, the draft model distilled on the target's corrections while it serves;
- ``drafters``: prompt_lookup, draft_model, ngram_pool, suffix, recycling, goose, rasd, swift;
  ``config.TokenSpeculation``;
  ``layer_skip``: the target run with sublayers skipped (self-speculation).
"""

from .config import TokenSpeculation
from .tree import DraftTree

__all__ = ["DraftTree", "TokenSpeculation"]
