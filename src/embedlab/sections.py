"""The base of every params section (core ones in embedlab.params, each method's in
methods/<name>/params.py) and the shared field types. Imports nothing of the project."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _all_positive(values: list[float]) -> list[float]:
    if any(v <= 0 for v in values):
        raise ValueError(f"{values} must all be > 0")
    return values


# A list of positive numbers (pydantic names the key in the error).
PositiveFloats = Annotated[list[float], AfterValidator(_all_positive)]
