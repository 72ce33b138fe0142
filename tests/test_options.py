"""Typed options: validation names the option, merging keeps the rest."""
import math
import pathlib

import numpy as np
import pytest

from xtl.nn.backends.loop import FitOptions
from xtl.options import check_bool, check_float, check_int


def test_fit_options_defaults_and_merge():
    assert FitOptions.merge(None) == FitOptions()
    opts = FitOptions.merge(FitOptions(epochs=5), seed=np.int64(3), callbacks=None)
    assert opts.epochs == 5 and opts.seed == 3 and type(opts.seed) is int
    assert opts.callbacks == ()
    assert FitOptions.merge({"epochs": 5, "seed": 3}) == opts
    assert opts.replace(seed=4).seed == 4 and opts.seed == 3  # frozen, copied
    assert FitOptions.merge(opts) is opts
    assert opts.to_dict()["epochs"] == 5


@pytest.mark.parametrize("kwargs, error, match", [
    ({"epochs": 0}, ValueError, "epochs must be an int >= 1, got 0"),
    ({"epochs": 2.0}, TypeError, "epochs must be an int, got 2.0"),
    ({"batch_size": True}, TypeError, "batch_size must be an int"),
    ({"learning_rate": float("nan")}, ValueError, "learning_rate must be a finite number"),
    ({"learning_rate": -1e-3}, ValueError, "learning_rate must be >= 0"),
    ({"learning_rate": "0.1"}, TypeError, "learning_rate must be a number"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
    ({"seed": 1.5}, TypeError, "seed must be an int, got 1.5"),
    ({"patience": 0}, ValueError, "patience must be an int >= 1"),
    ({"memory_limit": math.inf}, ValueError, "memory_limit must be a finite"),
    ({"deterministic": 1}, TypeError, "deterministic must be True or False"),
    ({"checkpoint_dir": 3}, TypeError, "checkpoint_dir must be a path"),
    ({"callbacks": "early"}, TypeError, "callbacks must be a sequence"),
    ({"epoch": 3}, TypeError, r"unknown FitOptions option\(s\) \['epoch'\]; valid: epochs"),
])
def test_fit_options_refuse_bad_values_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        FitOptions.merge(None, **kwargs)


def test_merge_refuses_other_types():
    with pytest.raises(TypeError, match="options must be a FitOptions, a dict or None"):
        FitOptions.merge([("epochs", 3)])


def test_validators():
    assert check_int(np.int32(4), "n", minimum=1) == 4
    assert check_int(None, "n", optional=True) is None
    assert check_float(np.float32(0.5), "x", positive=True) == 0.5
    assert check_bool(np.bool_(True), "flag") is True
    with pytest.raises(ValueError, match="x must be <= 1"):
        check_float(2, "x", maximum=1)
    with pytest.raises(ValueError, match="x must be > 0"):
        check_float(0, "x", positive=True)
    with pytest.raises(TypeError, match="n must be an int or None"):
        check_int("3", "n", optional=True)
    assert FitOptions(checkpoint_dir=pathlib.Path("a")).checkpoint_dir == pathlib.Path("a")
