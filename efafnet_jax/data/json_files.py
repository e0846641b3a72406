"""Loading annotation JSON (a local path or a URL) with errors that name the file and
the problem."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from etils import epath

from efafnet_jax.data.records import BadRecordError, read_file


def load_json(path: str):
    """Parses `path`; a missing, unreadable, truncated or malformed file raises BadRecordError."""
    if path and epath.Path(path).is_dir():  # epath.Path('') is the current folder
        raise BadRecordError(f"{path} is a directory, not a JSON file")
    data = read_file(path, f"annotation file {path}")
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as err:
        raise BadRecordError(
            f"annotation file {path} is not valid JSON (truncated or "
            f"malformed): {err.msg} at line {err.lineno} column {err.colno}"
        ) from err
    except UnicodeDecodeError as err:
        raise BadRecordError(f"annotation file {path} cannot be read: {err}") from err


def finite_numbers(record: dict, field: str, length: int | None, where: str) -> list[float]:
    """record[field] as floats; raises BadRecordError naming `where` and the field."""
    if field not in record:
        raise BadRecordError(f"{where}: field '{field}' is missing")
    values = record[field]
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise BadRecordError(f"{where}: field '{field}' is not a list")
    if length is not None and len(values) != length:
        raise BadRecordError(
            f"{where}: field '{field}' has {len(values)} values, expected {length}"
        )
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise BadRecordError(f"{where}: field '{field}' has a non-numeric value") from err
    if not all(math.isfinite(v) for v in numbers):
        raise BadRecordError(f"{where}: field '{field}' has a non-finite value")
    return numbers


def finite_number(record: dict, field: str, where: str) -> float:
    """record[field] as one finite float; raises BadRecordError naming `where` and the field."""
    return finite_numbers({field: [record[field]]} if field in record else {}, field, 1, where)[0]
