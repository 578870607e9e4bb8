"""The base of every configuration section a recipe is made of (each subsystem owns its section's model)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

WHY = "maximum_why"  # the schema key of an upper bound's reason (``at_most``)
SEED_WHY = "seeds go to torch's generators, which take 64-bit seeds"
# a CPU model's linear layers: float32 (none), int8 or float16 weights (``backends.sources.quantize_linear``)
Quantize = Literal["none", "int8", "fp16"]
QUANTIZE_KINDS: tuple[str, ...] = get_args(Quantize)[1:]


class Section(BaseModel):
    """A recipe section: unknown keys are errors, assignments are validated, and no number is infinite or NaN (YAML
    reads ``.inf`` and ``.nan`` as floats, and no knob means anything at either)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def at_most(maximum: int | float, why: str) -> dict[str, Any]:
    """``Field`` keywords for an upper bound that says why it is there: ``Field(8, ge=1, **at_most(1024, "..."))``.
    A number past it is refused while the recipe is read, with the reason, instead of failing (or running for hours)
    once models are loaded; the reason also goes to the schema and docs/recipes.md."""
    return {"le": maximum, "json_schema_extra": {WHY: why}}
