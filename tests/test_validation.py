import numpy as np
import pytest

from chunkreg._validation import as_float_array, check_finite, check_same_shape, per_axis
from chunkreg.errors import ChunkregError, InputError


def test_errors_are_value_errors():
    assert issubclass(ChunkregError, ValueError)
    assert issubclass(InputError, ChunkregError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, (3, 3, 3)), ((1, 2, 3), (1, 2, 3)), ({0: 4, -1: 2}, (4, 0, 2))],
)
def test_per_axis(value, expected):
    assert per_axis(value, 3, "depth") == expected


@pytest.mark.parametrize("value", [(1, 2), {5: 1}, 1.5, -1, True])
def test_per_axis_rejects(value):
    with pytest.raises(InputError, match="depth"):
        per_axis(value, 3, "depth", minimum=0)


def test_same_shape_and_finite():
    a = np.zeros((4, 5))
    with pytest.raises(InputError, match="same shape"):
        check_same_shape(a, np.zeros((5, 4)))
    with pytest.raises(InputError, match="number of dimensions"):
        check_same_shape(a, np.zeros((4, 5, 3)))
    b = a.copy()
    b[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_finite(b, "moving_image")


def test_as_float_array_dtypes():
    assert as_float_array(np.zeros(3, np.float16), "x").dtype == np.float32
    assert as_float_array(np.zeros(3, np.float32), "x").dtype == np.float32
    assert as_float_array(np.zeros(3, np.uint16), "x").dtype == np.float64
    with pytest.raises(InputError, match="real-valued"):
        as_float_array(np.zeros(3, complex), "x")
