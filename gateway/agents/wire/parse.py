"""Upstream JSON into the openai package's response types, without its per-call Python walk.

The stock client builds every response with `construct_type`, a recursive Python walk over
the JSON and the type annotations (the largest share of its CPU per call). A well-formed
body is validated here by pydantic-core instead (compiled, one call), which gives the same
objects; anything it refuses (a field of an unexpected type, an event type this openai
release does not know) falls back to `construct_type`, the stock client's own lenient
parsing, so no answer the stock path accepts is refused here.
"""

from __future__ import annotations

import typing
from typing import Any, TypeVar, get_args, get_origin

import pydantic
from openai import BaseModel
from openai._models import construct_type
from openai.types.responses import ResponseStreamEvent

ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_model(cast_to: type[ModelT], data: object) -> ModelT:
    """`data` as `cast_to`: validated when it conforms, else built as the stock client does."""
    try:
        return cast_to.model_validate(data)
    except pydantic.ValidationError:
        return typing.cast(ModelT, construct_type(type_=cast_to, value=data))


def _event_classes() -> dict[str, type[BaseModel]]:
    """Each Responses stream event class by the literal of its `type` field."""
    union = get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], PropertyInfo]
    classes: dict[str, type[BaseModel]] = {}
    for member in get_args(union):
        annotation = member.model_fields["type"].annotation
        if get_origin(annotation) is typing.Literal:
            for literal in get_args(annotation):
                classes[literal] = member
    return classes


_EVENTS = _event_classes()


def parse_stream_event(data: Any) -> Any:
    """One Responses stream event: its class by `type` when known, else the stock parsing."""
    cls = _EVENTS.get(str(data.get("type"))) if isinstance(data, dict) else None
    if cls is not None:
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError:
            pass
    return construct_type(type_=ResponseStreamEvent, value=data)
