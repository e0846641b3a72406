"""Loading annotation JSON (a local path or a URL) with errors that name the file and
the problem."""

from __future__ import annotations

import json
import math

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


def describe(value) -> str:
    """How a JSON value reads in a message: the string '316.76', true, null, a list."""
    if isinstance(value, str):
        return f"the string {value!r}"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def is_number(value) -> bool:
    """A JSON number: int or float, not a bool (Python's bool is an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_numbers(record: dict, field: str, length: int | None, where: str) -> list[float]:
    """record[field], a list of JSON numbers, as floats; raises BadRecordError naming `where`,
    the field and the first value that is not a finite number (a string such as "316.76",
    a bool, null or a nested list is refused, not converted)."""
    if field not in record:
        raise BadRecordError(f"{where}: field '{field}' is missing")
    values = record[field]
    if not isinstance(values, list):
        raise BadRecordError(f"{where}: field '{field}' is {describe(values)}, not a list")
    if length is not None and len(values) != length:
        raise BadRecordError(
            f"{where}: field '{field}' has {len(values)} values, expected {length}"
        )
    for index, value in enumerate(values):
        if not is_number(value):
            raise BadRecordError(
                f"{where}: field '{field}' holds {describe(value)} at index {index}, "
                "expected a number"
            )
        if not math.isfinite(value):
            raise BadRecordError(f"{where}: field '{field}' has a non-finite value")
    return [float(v) for v in values]


def finite_number(record: dict, field: str, where: str) -> float:
    """record[field] as one finite float; raises BadRecordError naming `where` and the field."""
    if field not in record:
        raise BadRecordError(f"{where}: field '{field}' is missing")
    value = record[field]
    if not is_number(value):
        raise BadRecordError(f"{where}: field '{field}' is {describe(value)}, expected a number")
    if not math.isfinite(value):
        raise BadRecordError(f"{where}: field '{field}' has a non-finite value")
    return float(value)


def is_integer(value) -> bool:
    """A JSON integer: int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def integer(record: dict, field: str, where: str) -> int:
    """record[field], a JSON integer (an id, a count, a 0/1 flag); raises BadRecordError
    naming `where` and the field for anything else (3.0, "3", true, null)."""
    if field not in record:
        raise BadRecordError(f"{where}: field '{field}' is missing")
    value = record[field]
    if not is_integer(value):
        raise BadRecordError(f"{where}: field '{field}' is {describe(value)}, expected an integer")
    return value


def text(record: dict, field: str, where: str) -> str:
    """record[field], a non-empty JSON string; raises BadRecordError naming `where` and
    the field."""
    if field not in record:
        raise BadRecordError(f"{where}: field '{field}' is missing")
    value = record[field]
    if not isinstance(value, str) or not value:
        raise BadRecordError(
            f"{where}: field '{field}' is {describe(value)}, expected a non-empty string"
        )
    return value
