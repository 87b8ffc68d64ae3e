"""numpy arrays as Triton tensors: their datatype name and the bytes that travel.

Both protocols send a tensor as raw bytes. Numbers go as the array's own
memory. BYTES tensors (text, serialized records) go as Triton lays them out:
each element a 4-byte little-endian length, then its bytes, in row-major order.
Elements must be `bytes` or `str` (sent as UTF-8): anything else is refused
here, where tritonclient would silently send its `str()`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Numeric dtypes whose memory is the tensor as Triton reads it (little-endian hosts).
_NUMERIC_TYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.bool_): "BOOL",
}
# Object arrays of bytes/str, and numpy's fixed-width bytes ("S") and text ("U").
_BYTES_KINDS = frozenset("OSU")


def datatype(array: npt.NDArray[np.generic]) -> str:
    """Triton's name for the array's element type; TypeError for one Triton is not sent."""
    try:
        return _NUMERIC_TYPES[array.dtype]
    except KeyError:
        if array.dtype.kind in _BYTES_KINDS:
            return "BYTES"
        raise TypeError(
            f"unsupported input dtype {array.dtype}: send one of "
            f"{', '.join(sorted(str(t) for t in _NUMERIC_TYPES))}, or an object array "
            "of bytes/str"
        ) from None


def is_bytes(array: npt.NDArray[np.generic]) -> bool:
    return array.dtype.kind in _BYTES_KINDS


def serialize_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """A BYTES tensor's wire form: per element, its length (4 bytes LE) then its bytes."""
    parts: list[bytes] = []
    for element in elements_as_bytes(array):
        parts.append(len(element).to_bytes(4, "little"))
        parts.append(element)
    return b"".join(parts)


def elements_as_bytes(array: npt.NDArray[np.generic]) -> list[bytes]:
    """Every element as `bytes`, row-major; str is encoded as UTF-8, anything else refused."""
    values: list[object] = array.ravel(order="C").tolist()
    encoded: list[bytes] = []
    for value in values:
        if isinstance(value, bytes):
            encoded.append(bytes(value))  # np.bytes_ too, as plain bytes
        elif isinstance(value, str):
            encoded.append(value.encode())
        else:
            raise TypeError(
                f"a BYTES tensor holds bytes or str, not {type(value).__name__}: {value!r:.40}"
            )
    return encoded


def tensor_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """What travels for this array: its serialized elements (BYTES) or its memory."""
    if is_bytes(array):
        return serialize_bytes(array)
    return np.ascontiguousarray(array).tobytes()
