"""sw.quant.config: every bad field of a quantizer config is named in its error."""
import pytest

from hw.errors import BinbertError
from sw import quant as Q


@pytest.mark.parametrize("make,field", [
    (lambda: Q.WeightQuantConfig("xnor"), "weight method"),
    (lambda: Q.WeightQuantConfig("twn", per_row="yes"), "per_row"),
    (lambda: Q.WeightQuantConfig("twn", centered=True), "centered"),
    (lambda: Q.WeightQuantConfig("twn", learned_scale=True), "learned_scale"),
    (lambda: Q.WeightQuantConfig("bwn", learned_scale="yes"), "learned_scale"),
    (lambda: Q.ActQuantConfig("log"), "act method"),
    (lambda: Q.ActQuantConfig("lsq", bits=1), "act bits"),
    (lambda: Q.ActQuantConfig("uniform", bits=9), "act bits"),
    (lambda: Q.ActQuantConfig("lsq", bits="4"), "act bits"),
    (lambda: Q.ActQuantConfig("lsq", bits=True), "act bits"),
    (lambda: Q.ActQuantConfig("lsq", init=-1.0), "init"),
    (lambda: Q.ActQuantConfig("lsq", integer=1), "integer"),
    (lambda: Q.ActQuantConfig("lsq", threshold=True), "threshold"),
    (lambda: Q.ActQuantConfig("sign", threshold=1), "threshold"),
])
def test_bad_input_names_the_field(make, field):
    with pytest.raises(BinbertError, match=field):
        make()
