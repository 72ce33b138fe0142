"""One schema per value: an option gets the same verdict however it arrives.

Every option below is fed the same edge values through (a) the API function's
keyword, (b) its options object and (c) the experiment config key that maps to it;
the three must agree: accepted by all, or refused by all with the same family.

The family of a refusal: TypeError (not the expected type) or ValueError (out of
range). A config refuses with a :class:`~xtl.experiment.config.ConfigError` (a
ValueError: every config error is one) whose ``__cause__`` is the option's own
TypeError or ValueError, so its family is the cause's.

The API paths stop right after the options are made (a stub where the work would
start), so a refusal is shown to come before any training or stepping.
"""
import copy
import dataclasses
import math

import pytest

import xtl
from xtl.experiment.config import DEMO_CONFIG, ConfigError, parse_config
from xtl.explain import recommend
from xtl.nn import sweep as sweep_module
from xtl.nn import training as training_module
from xtl.nn.model import Model
from xtl.nn.spec import NetworkSpec
from xtl.nn.backends.loop import FitOptions
from xtl.nn.sweep import SweepOptions
from xtl.solver import run as run_module
from xtl.solver.options import Output, Schedule

from conftest import TINY_SPEC, make_les

#: The edge values: zero, one as int and float, negative, NaN, infinity, a string
#: holding a number, a list where a scalar is expected (and, for a list option, the
#: int 1 is an int where a list is expected).
EDGES = [0, 1, 1.0, -1, math.nan, math.inf, "3", [1]]


class Reached(Exception):
    """The API got past its options: where the work would start."""


def _reached(*args, **kwargs):
    raise Reached


def verdict(call) -> str:
    """``"accepted"``, ``"TypeError"`` or ``"ValueError"`` (see the module docstring)."""
    try:
        call()
    except Reached:
        return "accepted"
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            assert err.__cause__ is None or isinstance(err.__cause__, (TypeError, ValueError))
            err = err.__cause__ or err
        return "TypeError" if isinstance(err, TypeError) else "ValueError"
    return "accepted"


# ------------------------------------------------------------------------- the paths
@pytest.fixture
def stubs(monkeypatch):
    """Stop each API function where its work would start."""
    backend = type("Stub", (), {"build": staticmethod(_reached)})()
    monkeypatch.setattr(training_module, "get_backend", lambda name: backend)
    monkeypatch.setattr(sweep_module, "_prepare_sweep", _reached)
    monkeypatch.setattr(run_module, "_Run", _reached)
    monkeypatch.setattr(recommend, "check_pair_datasets", lambda *a: None)
    monkeypatch.setattr(recommend, "_RECOMMENDERS", dict(recommend._RECOMMENDERS))
    for cls in RECOMMENDERS.values():
        recommend.register_recommender(f"stub-{cls.__name__}", _reached, options_class=cls)


DATA = make_les(n=16, nt=8)
MODEL = Model("keras", None, NetworkSpec.from_any(TINY_SPEC), {})
CASE = xtl.get_case("tiny")
#: What a Schedule needs besides the option tried (the config's base flow's times).
TIMES = dict(t_end=30.0, save_interval=0.1)
RECOMMENDERS = {"spectral": recommend.SpectralOptions,
                "gauss-newton": recommend.GaussNewtonOptions,
                "probe": recommend.ProbeOptions,
                "gradient-norm": recommend.GradientNormOptions}


def api_calls(owner: str, name: str, value) -> list:
    """The API functions that take option ``name`` of ``owner`` as a keyword."""
    kw = {name: value}
    if owner == "FitOptions":  # a sweep's tasks take their seeds from seeds=
        return [lambda: xtl.train(DATA, TINY_SPEC, **kw)] + (
            [lambda: xtl.layer_sweep(MODEL, DATA, DATA, **kw)] if name != "seed" else [])
    if owner == "SweepOptions":
        return [lambda: xtl.layer_sweep(MODEL, DATA, DATA, **kw)]
    if owner == "validation":
        return [lambda: xtl.train(DATA, TINY_SPEC, **kw),
                lambda: xtl.layer_sweep(MODEL, DATA, DATA, **kw)]
    if owner in ("Schedule", "Output"):
        return [lambda: xtl.simulate(CASE, **{**TIMES, **kw})]
    cls = RECOMMENDERS[owner]
    return [lambda: recommend.recommend_layers(MODEL, DATA, DATA,
                                               method=f"stub-{cls.__name__}", **kw)]


def object_call(owner: str, name: str, value):
    """Making the options object with option ``name``."""
    if owner == "validation":
        return lambda: SweepOptions(validation=value)
    cls = {"FitOptions": FitOptions, "SweepOptions": SweepOptions, "Schedule": Schedule,
           "Output": Output, **RECOMMENDERS}[owner]
    extra = TIMES if owner == "Schedule" else {}
    return lambda: cls(**{**extra, name: value})


#: A small valid config: the demo with one target and no a posteriori stage.
BASE_CONFIG = {**copy.deepcopy(DEMO_CONFIG), "targets": DEMO_CONFIG["targets"][:1],
               "les": {"enabled": False}}


def config_call(path: tuple, value):
    """Parsing :data:`BASE_CONFIG` with the key at ``path`` set to ``value``."""
    raw = copy.deepcopy(BASE_CONFIG)
    table = raw
    for key in path[:-1]:
        table = table.setdefault(key, {})
    table[path[-1]] = value
    return lambda: parse_config(raw)


# ------------------------------------------------------------------------- the options
#: ``(owner, option, config keys that map to it)``.
SCHEMA = [
    *[("FitOptions", name, [("training", name), ("transfer", name)])
      for name in ("epochs", "batch_size", "learning_rate", "seed", "patience")],
    *[("FitOptions", name, []) for name in ("memory_limit", "block", "deterministic",
                                            "callbacks")],
    ("validation", "validation", [("training", "validation"), ("transfer", "validation")]),
    *[("SweepOptions", name, [("sweep", name)]) for name in ("seeds", "baselines", "alpha")],
    *[("SweepOptions", name, []) for name in ("pairs", "n_samples", "fraction")],
    ("Schedule", "save_interval", [("base", "save_interval")]),
    ("Schedule", "spin_up", [("base", "spin_up")]),
    *[("Schedule", name, []) for name in ("cfl_limit", "check_every", "checkpoint_interval")],
    *[("Output", name, []) for name in ("dns_every", "overwrite")],
    *[(method, f.name, [("recommend", method, f.name)])
      for method, cls in RECOMMENDERS.items()
      for f in dataclasses.fields(cls)],
]


@pytest.mark.parametrize("owner, name, keys", SCHEMA,
                         ids=[f"{o}.{n}" for o, n, _ in SCHEMA])
def test_an_option_gets_one_verdict_however_it_arrives(stubs, owner, name, keys):
    for value in EDGES:
        expected = verdict(object_call(owner, name, value))
        got = {f"api {i}": verdict(call) for i, call in enumerate(api_calls(owner, name, value))}
        got.update({".".join(key): verdict(config_call(key, value)) for key in keys})
        assert set(got.values()) == {expected}, (owner, name, value, expected, got)


@pytest.mark.parametrize("owner, name, value, family", [
    ("FitOptions", "epochs", 0, "ValueError"),
    ("FitOptions", "epochs", 2.0, "TypeError"),
    ("FitOptions", "learning_rate", math.nan, "ValueError"),
    ("FitOptions", "learning_rate", "3", "TypeError"),
    ("validation", "validation", 1.0, "ValueError"),   # SweepOptions accepted it
    ("validation", "validation", 0, "accepted"),
    ("SweepOptions", "seeds", 2, "accepted"),           # a count
    ("SweepOptions", "seeds", 0, "ValueError"),
    ("SweepOptions", "alpha", 1.0, "ValueError"),
    ("probe", "validation", 1.0, "ValueError"),
    ("gauss-newton", "steps", 1, "TypeError"),          # an int where a list is expected
])
def test_the_verdicts_are_the_expected_ones(stubs, owner, name, value, family):
    assert verdict(object_call(owner, name, value)) == family


def test_one_meaning_of_seeds():
    """An int is a count of seeds, in the API and in a config (from experiment.seed)."""
    assert SweepOptions(seeds=2).seeds == (0, 1) and SweepOptions(seeds=[2]).seeds == (2,)
    assert parse_config(BASE_CONFIG).seeds == [0, 1]
    raw = copy.deepcopy(BASE_CONFIG)
    raw["experiment"]["seed"] = 5
    assert parse_config(raw).seeds == [5, 6]
    raw["sweep"]["seeds"] = [2]
    assert parse_config(raw).seeds == [2]


def test_a_config_error_names_the_key_and_keeps_the_options_message():
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE_CONFIG, "transfer": {"epochs": 2.0}})
    assert str(info.value) == "config key 'transfer.epochs': must be an int, got 2.0"
    assert isinstance(info.value.__cause__, TypeError)
    assert str(info.value.__cause__) == "epochs must be an int, got 2.0"


def test_the_layer_list_is_one_checked_tuple():
    """check_layers refuses what int() would silently turn into layers; a config's
    sweep.layers is its tuple."""
    from xtl.nn.spec import check_layers

    assert check_layers([3, 1, 3], 6) == (1, 3) and check_layers(2, 6) == (2,)
    for bad in ("23", [2.5], [True]):
        with pytest.raises(TypeError, match=r"layers must"):
            check_layers(bad, 6)
    raw = copy.deepcopy(BASE_CONFIG)
    raw["sweep"]["layers"] = [4, 2]
    assert parse_config(raw).sweep.layers == (2, 4)
    raw["sweep"]["layers"] = "23"
    with pytest.raises(ConfigError, match=r"'sweep\.layers': must be an int or a sequence"):
        parse_config(raw)
