"""A request's `data` -> Triton input tensors, for any model, from its manifest.

Every door takes the same forms of `data`:

- rows: `[[5.1, 3.5, 1.4, 0.2], ...]`, one list per row, values in the order of
  the manifest's features. A row of one value may be the value itself:
  `[0.3, 1.2]` for a one-feature model, `["some text", ...]` (or
  `[["some text"], ...]`) for a text model whose input is BYTES [-1, 1].
- records: `[{"mean radius": 14.1, ...}, ...]`, keyed by the manifest's feature
  names, every one and no other. An input without feature names is keyed by its
  own name: `[{"text": "some text"}]` for a text model whose input is `text`.
  For a model of several inputs a record holds the keys of all of them.
- by input: `{"input_a": rows, "input_b": rows}` for a model of several inputs
  (or one), every input named, each with the same number of rows.

Numbers become the input's own datatype (FP32, INT64, BOOL, ...); an integer
input takes only whole numbers. BYTES inputs take strings. Anything else is a
400 naming the row and the feature or input at fault: a missing, unknown or
non-finite feature, a row of the wrong width, a string where a number belongs,
more rows than `max_rows`.

The common case (rows of numbers for one input) is one pass over the values'
types and one numpy conversion; the slower diagnosis runs only to explain a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from control_plane.core.errors import BadRequestError
from control_plane.model_core.handle import InputLayout, ModelHandle

# Constant, not a setting: it is part of every door's request contract.
MAX_ROWS = 1000

Tensors = dict[str, npt.NDArray[Any]]

_NUMBERS = frozenset((float, int))
_JSON_NAMES = {
    str: "a string",
    bool: "a boolean",
    type(None): "null",
    list: "a list",
    dict: "an object",
}


def input_tensors(
    handle: ModelHandle, data: object, *, max_rows: int = MAX_ROWS
) -> tuple[Tensors, int]:
    """The model's input tensors built from `data`, and how many rows they hold."""
    layouts = handle.input_layouts
    if not layouts:
        raise BadRequestError(
            f"model {handle.model_id} declares no inputs", model_id=handle.model_id
        )
    if isinstance(data, dict):
        per_input = _by_input(handle, layouts, data)
    elif isinstance(data, list):
        if not data:
            raise BadRequestError("data holds no rows", model_id=handle.model_id)
        if type(data[0]) is dict:
            per_input = _from_records(handle, layouts, data)
        elif len(layouts) == 1:
            per_input = {layouts[0].name: data}
        else:
            names = [layout.name for layout in layouts]
            raise BadRequestError(
                f"model {handle.model_id} has {len(names)} inputs ({', '.join(names)}): send "
                "data as records or as an object of input name -> rows",
                model_id=handle.model_id,
                inputs=names,
            )
    else:
        raise BadRequestError(
            "data must be a list of rows or records, or an object of input name -> rows",
            model_id=handle.model_id,
        )
    counts = {name: len(rows) for name, rows in per_input.items()}
    n_rows = next(iter(counts.values()))
    if len(set(counts.values())) > 1:
        raise BadRequestError(
            "every input needs the same number of rows", model_id=handle.model_id, rows=counts
        )
    if n_rows == 0:
        raise BadRequestError("data holds no rows", model_id=handle.model_id)
    if n_rows > max_rows:
        raise BadRequestError(
            f"too many rows: {n_rows}; at most {max_rows} per request",
            model_id=handle.model_id,
            rows=n_rows,
            max_rows=max_rows,
        )
    tensors = {layout.name: _tensor(layout, per_input[layout.name]) for layout in layouts}
    return tensors, n_rows


def _by_input(
    handle: ModelHandle, layouts: Sequence[InputLayout], data: Mapping[str, Any]
) -> dict[str, list[Any]]:
    names = [layout.name for layout in layouts]
    unknown = sorted(set(data) - set(names))
    missing = [name for name in names if name not in data]
    if unknown or missing:
        problem = f"unknown input {unknown[0]!r}" if unknown else f"missing input {missing[0]!r}"
        raise BadRequestError(
            f"{problem}; model {handle.model_id} takes {', '.join(names)}",
            model_id=handle.model_id,
            unknown=unknown,
            missing=missing,
            inputs=names,
        )
    for name in names:
        if not isinstance(data[name], list):
            raise BadRequestError(f"input {name!r} must be a list of rows", input=name)
    return {name: data[name] for name in names}


def _from_records(
    handle: ModelHandle, layouts: Sequence[InputLayout], records: list[Any]
) -> dict[str, list[Any]]:
    """Records keyed by feature names (or input names) -> each input's rows, in order."""
    fields = [field for layout in layouts for field in layout.fields]
    expected = set(fields)
    for index, record in enumerate(records):
        if type(record) is not dict:
            raise BadRequestError(
                f"row {index} is {_json_name(record)}: send every row as a record or every "
                "row as a list",
                row=index,
            )
        if record.keys() != expected:
            missing = [field for field in fields if field not in record]
            unknown = sorted(key for key in record if key not in expected)
            problem = (
                f"missing feature {missing[0]!r}" if missing else f"unknown feature {unknown[0]!r}"
            )
            raise BadRequestError(
                f"row {index}: {problem}; model {handle.model_id} takes {', '.join(fields)}",
                row=index,
                missing=missing,
                unknown=unknown,
                features=fields,
            )
    per_input: dict[str, list[Any]] = {}
    for layout in layouts:
        if layout.feature_names is None:  # the record holds this input's whole row
            per_input[layout.name] = [record[layout.name] for record in records]
        else:
            names = layout.feature_names
            per_input[layout.name] = [[record[name] for name in names] for record in records]
    return per_input


def _tensor(layout: InputLayout, rows: list[Any]) -> npt.NDArray[Any]:
    if layout.dtype is None:
        if layout.datatype != "BYTES":
            raise BadRequestError(
                f"input {layout.name!r} is {layout.datatype}, which the control plane cannot send",
                input=layout.name,
            )
        return _text_tensor(layout, rows)
    if layout.width is not None or layout.row_shape == (-1,):
        return _number_rows(layout, rows)
    return _number_tensor(layout, rows)


def _number_rows(layout: InputLayout, rows: list[Any]) -> npt.NDArray[Any]:
    """1-D rows of numbers (the tabular case): checked value by value, named on failure."""
    assert layout.dtype is not None
    row_types = set(map(type, rows))
    if row_types <= _NUMBERS and layout.width == 1:
        rows = [[value] for value in rows]  # each value stands for its one-value row
    elif row_types != {list}:
        index = next(i for i, row in enumerate(rows) if type(row) is not list)
        _refuse_row(layout, index, rows[index])
    widths = set(map(len, rows))
    if len(widths) > 1 or (layout.width is not None and widths != {layout.width}):
        index = next(i for i, row in enumerate(rows) if len(row) != (layout.width or len(rows[0])))
        _refuse_width(layout, index, len(rows[index]), layout.width or len(rows[0]))
    value_types = set(map(type, chain.from_iterable(rows)))
    allowed = _NUMBERS | {bool} if layout.dtype.kind == "b" else _NUMBERS
    if not value_types <= allowed:
        _refuse_value(layout, rows, allowed)
    if layout.dtype.kind in "iu" and float in value_types:
        wide = np.asarray(rows, dtype=np.float64)
        _ensure_finite(layout, wide)
        fractional = np.argwhere(wide != np.floor(wide))
        if len(fractional):
            row, column = (int(v) for v in fractional[0])
            raise BadRequestError(
                f"row {row}, feature {layout.feature(column)!r}: {layout.datatype} takes whole "
                f"numbers, not {wide[row, column]!r}",
                input=layout.name,
                row=row,
                feature=layout.feature(column),
            )
    try:
        with np.errstate(over="ignore"):  # too large for the type: infinite, refused below
            array = np.asarray(rows, dtype=layout.dtype)
    except OverflowError:
        raise BadRequestError(
            f"input {layout.name!r}: a value is out of {layout.datatype}'s range", input=layout.name
        ) from None
    if layout.dtype.kind == "f":
        _ensure_finite(layout, array)  # after the cast: 1e300 is infinite in FP32
    return array


def _number_tensor(layout: InputLayout, rows: list[Any]) -> npt.NDArray[Any]:
    """Rows of several dimensions (an image, a sequence of vectors): numpy checks them."""
    assert layout.dtype is not None
    try:
        with np.errstate(over="ignore"):
            array = np.asarray(rows, dtype=layout.dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadRequestError(
            f"input {layout.name!r}: every row must be numbers of shape {list(layout.row_shape)}",
            input=layout.name,
            shape=list(layout.row_shape),
        ) from None
    _ensure_shape(layout, array)
    if layout.dtype.kind == "f":
        _ensure_finite(layout, array)
    return array


def _text_tensor(layout: InputLayout, rows: list[Any]) -> npt.NDArray[Any]:
    width = layout.width
    row_types = set(map(type, rows))
    if row_types == {str} and width == 1:
        array = np.empty((len(rows), 1), dtype=np.object_)
        array[:, 0] = rows
        return array
    if row_types != {list}:
        index = next(i for i, row in enumerate(rows) if type(row) is not list)
        _refuse_row(layout, index, rows[index])
    widths = set(map(len, rows))
    if len(widths) > 1 or (width is not None and widths != {width}):
        index = next(i for i, row in enumerate(rows) if len(row) != (width or len(rows[0])))
        _refuse_width(layout, index, len(rows[index]), width or len(rows[0]))
    if set(map(type, chain.from_iterable(rows))) != {str}:
        _refuse_value(layout, rows, frozenset((str,)))
    array = np.empty((len(rows), len(rows[0])), dtype=np.object_)
    for index, row in enumerate(rows):
        array[index, :] = row
    _ensure_shape(layout, array)
    return array


def _ensure_shape(layout: InputLayout, array: npt.NDArray[Any]) -> None:
    shape = array.shape[1:]
    expected = layout.row_shape
    if len(shape) != len(expected) or any(
        e not in (-1, s) for e, s in zip(expected, shape, strict=True)
    ):
        raise BadRequestError(
            f"input {layout.name!r}: rows of shape {list(shape)}, expected {list(expected)}",
            input=layout.name,
            shape=list(shape),
            expected=list(expected),
        )


def _ensure_finite(layout: InputLayout, array: npt.NDArray[Any]) -> None:
    if np.isfinite(array).all():
        return
    where = tuple(int(v) for v in np.argwhere(~np.isfinite(array))[0])
    feature = layout.feature(where[1]) if len(where) == 2 else layout.name
    raise BadRequestError(
        f"row {where[0]}, feature {feature!r}: features must be finite numbers "
        "(no NaN or infinity)",
        input=layout.name,
        row=where[0],
        feature=feature,
    )


def _refuse_row(layout: InputLayout, index: int, row: object) -> None:
    what = "a string" if layout.dtype is None else "a number"
    takes = (
        f"one value ({what}) or a list of {layout.width}"
        if layout.width == 1
        else f"a list of {layout.width if layout.width is not None else 'its'} values"
    )
    raise BadRequestError(
        f"row {index} of input {layout.name!r} is {_json_name(row)}; each row is {takes}",
        input=layout.name,
        row=index,
    )


def _refuse_width(layout: InputLayout, index: int, found: int, expected: int) -> None:
    names = f": {', '.join(layout.feature_names)}" if layout.feature_names else ""
    raise BadRequestError(
        f"row {index} has {found} values; input {layout.name!r} takes {expected}{names}",
        input=layout.name,
        row=index,
        expected_features=expected,
        found=found,
    )


def _refuse_value(layout: InputLayout, rows: list[list[Any]], allowed: frozenset[type]) -> None:
    for index, row in enumerate(rows):
        for column, value in enumerate(row):
            if type(value) not in allowed:
                wanted = "a string" if layout.dtype is None else "a number"
                raise BadRequestError(
                    f"row {index}, feature {layout.feature(column)!r}: expected {wanted}, got "
                    f"{_json_name(value)}",
                    input=layout.name,
                    row=index,
                    feature=layout.feature(column),
                )
    raise AssertionError("no value was refused")  # pragma: no cover


def _json_name(value: object) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return "a number"
    return _JSON_NAMES.get(type(value), type(value).__name__)
