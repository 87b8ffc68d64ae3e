"""The array type the exporters pass around (numpy arrays of any dtype)."""

from typing import Any

from numpy.typing import NDArray

Array = NDArray[Any]
