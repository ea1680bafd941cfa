"""The value types every configuration section shares, and its base model."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PositiveFloat,
    PositiveInt,
)

from astropt.storage import absolute_uri


def _number(value: object) -> object:
    """YAML reads `1e6` as a string; accept it (and `2_000_000`) as a number."""
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    return value


def _whole(value: object) -> object:
    """A count written as `1e6` or `2_000_000`."""
    number = _number(value)
    return int(number) if isinstance(number, float) and number.is_integer() else number


Number = Annotated[PositiveFloat, BeforeValidator(_number)]
Count = Annotated[PositiveInt, BeforeValidator(_whole)]
Location = Annotated[str, AfterValidator(absolute_uri)]


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
