"""Integer checks shared by ``prepare`` and the batch sampler, each naming the bad value."""

from __future__ import annotations

import numpy as np

from bench.errors import BadInput


def is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def require_int(name: str, value: object, minimum: int) -> int:
    if not is_int_at_least(value, minimum):
        raise BadInput(f"{name} {value!r} is invalid; it must be an integer >= {minimum}")
    return int(value)  # type: ignore[call-overload]


def validate_image_size(image_size: object) -> int:
    return require_int("image size", image_size, 8)


def validate_limit(limit: object) -> int | None:
    if limit is not None and not is_int_at_least(limit, 1):
        raise BadInput(f"limit {limit!r} is invalid; it must be an integer >= 1 or omitted")
    return None if limit is None else int(limit)  # type: ignore[call-overload]
