"""The format table is data (it imports no converter), so the names it shares with the converters are
written twice; these checks keep the two in step."""

from __future__ import annotations

from exporters import formats
from exporters.converters import to_tflite, to_tflite_int8
from judging.judged_rows import CALIBRATED


def test_every_tflite_precision_of_the_table_is_one_the_converters_build():
    assert set(formats.TFLITE_PRECISIONS) <= set(to_tflite.PRECISIONS)
    recipes = {"int8-dynamic", to_tflite_int8.W8A8_MIXED.name, to_tflite_int8.W8A8_POINTWISE.name,
               to_tflite_int8.ADAPTIVE}
    assert set(formats.TFLITE_INT8_PRECISIONS) == recipes


def test_calibrated_precisions_are_integer_kinds_of_the_table():
    kinds = {k.precision: k for f in formats.FORMATS for k in f.artifacts}
    assert CALIBRATED <= set(kinds) and all(kinds[p].arithmetic == "int8" for p in CALIBRATED)


def test_every_stage_the_table_names_resolves_to_a_function():
    for fmt in formats.FORMATS:
        assert callable(fmt.stage())
        assert fmt.prepare is None or callable(fmt.preparation())
