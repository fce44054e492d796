"""Base model: camelCase on the wire (Kubernetes convention), snake_case in Python."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Strict API object: unknown fields are errors, names are camelCase on the wire, and numbers
    are finite (JSON, and so the API server, cannot carry NaN or infinity; YAML's ``.inf`` can)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        alias_generator=to_camel,
        populate_by_name=True,
        validate_assignment=True,
    )

    def to_wire(self) -> dict:
        """The object as it appears in YAML/JSON: camelCase, unset optionals omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class OpenModel(ApiModel):
    """Status-like object that tolerates fields written by newer versions (and non-finite
    numbers: a diverged run reports its NaN loss)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=True)
