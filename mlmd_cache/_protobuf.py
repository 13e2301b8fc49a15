"""What differs between the two protobuf releases mlmd-cache runs on (4.25 beside ML Metadata 1.17.1,
6 beside 1.21), for code that reads message descriptors."""
from __future__ import annotations

from typing import Any

__all__ = ["is_repeated"]


def is_repeated(field: Any) -> bool:
    """Whether a ``FieldDescriptor`` is a repeated field. protobuf 6 deprecates ``label`` (a warning
    on every read) for ``is_repeated``, which protobuf 4 does not have."""
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED
