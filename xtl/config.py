"""The experiment configuration: a TOML file, validated, with the demo's defaults.

An experiment has a base flow and one or more targets, a network, training and
transfer settings. Every key is checked: an unknown key, a negative size or a
missing target is reported by its dotted name (``targets[1].members``).

A shortened example (``examples/demo.toml`` is the full embedded default of
``xtl demo``, :data:`DEMO_CONFIG`)::

    [experiment]
    name = "my-study"
    seed = 0

    [base]
    case = "small-base"           # a preset (xtl cases); Case fields may be overridden
    members = 2                   # DNS ensemble members (seeds seed, seed+1, ...)
    spin_up = 20.0
    t_end = 30.0
    save_interval = 0.1

    [[targets]]
    case = "small-re"             # name defaults to the case; names must be unique

    [[targets]]
    name = "beta10"
    case = "small-base"
    beta = 10.0

    [network]                     # xtl.backends.base.NetworkSpec fields
    n_layers = 6
    channels = 24

    [training]                    # xtl.train keyword arguments
    epochs = 30

    [transfer]                    # xtl.transfer keyword arguments, plus the TL set size:
    fraction = 0.1                # of the base training set's size (or n_samples = ...)

    [sweep]                       # layers = [...] to sweep only some (the recommended
    enabled = true                # layers are always included); false: only those

    [les]                         # the a posteriori stage: no closure, the physics
    enabled = true                # baselines and the networks, each from several
    t_end = 50.0                  # held-out target states (> 50 large-eddy turnover
    save_interval = 0.5           # times of the 256² flows forced at kf = 4)
    initial_states = 2
    baseline = ["smagorinsky", "dynamic-smagorinsky"]
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ConfigError", "FlowConfig", "ExperimentConfig", "load_config", "DEMO_CONFIG"]


class ConfigError(ValueError):
    """An invalid experiment configuration (the message names the key)."""


_FLOW_KEYS = {
    "name", "case", "members", "spin_up", "t_end", "save_interval", "filter", "overrides",
    "control",
}
_CASE_FIELDS = {"Re", "kf", "beta", "mu", "n", "n_les", "dt", "forcing", "dealias", "ic_peak",
                "ic_energy"}


@dataclass(frozen=True)
class FlowConfig:
    """One flow of the experiment (the base or a target).

    Attributes
    ----------
    name : str
        Label used in file names and the report (default: the case name).
    case : str
        Preset name (see :func:`xtl.list_cases`).
    overrides : dict
        Case fields to change (``Re``, ``kf``, ``beta``, ``n``, ``n_les``, ``dt``, ...).
    members : int
        DNS ensemble members.
    spin_up, t_end, save_interval : float
        As in :func:`xtl.simulate`.
    filter : str
        Filter of the coarse-graining (``"gaussian"``, ``"box"``, ``"sharp"``).
    control : bool
        A target that is meant to be close to the base (a control): the experiment
        does not stop when it differs from the base by less than ``min_decades``.
    """

    name: str
    case: str
    overrides: dict = field(default_factory=dict)
    members: int = 1
    spin_up: float = 20.0
    t_end: float = 30.0
    save_interval: float = 0.1
    filter: str = "gaussian"
    control: bool = False

    def make_case(self):
        """The :class:`xtl.Case` of this flow."""
        from .cases import get_case

        return get_case(self.case, **self.overrides)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment; see the module docstring for the TOML layout."""

    name: str
    seed: int
    base: FlowConfig
    targets: tuple
    network: dict
    training: dict
    transfer: dict
    sweep: dict
    les: dict
    min_decades: float = 0.3
    budget: dict = field(default_factory=dict)
    recommend: dict = field(default_factory=dict)

    @property
    def seeds(self) -> list:
        """The sweep's seeds: ``[seed, seed + 1, ...]`` for a count, or the list given."""
        seeds = self.sweep.get("seeds", 1)
        return [self.seed + i for i in range(seeds)] if isinstance(seeds, int) else list(seeds)

    def target(self, name: str) -> FlowConfig:
        """The target flow called ``name``."""
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(f"no target named {name!r}; targets are {[t.name for t in self.targets]}")

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-safe), e.g. for hashing a stage's inputs."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    def digest(self, *parts) -> str:
        """A short stable hash of the named parts of the config (``"base"``, ...)."""
        d = self.to_dict()
        payload = json.dumps([d[p] if isinstance(p, str) and p in d else p for p in parts],
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: The embedded default experiment of ``xtl demo``: a 256² base flow and two targets
#: (another forcing wavenumber and a β-plane), two seeds per layer, sized for a 2-core CPU.
DEMO_CONFIG = {
    "experiment": {"name": "demo", "seed": 0},
    "base": {"case": "small-base", "members": 2, "spin_up": 20.0, "t_end": 30.0,
             "save_interval": 0.1},
    "targets": [
        {"case": "small-kf", "members": 1, "spin_up": 20.0, "t_end": 30.0, "save_interval": 0.1},
        {"case": "small-beta", "members": 1, "spin_up": 20.0, "t_end": 30.0,
         "save_interval": 0.1},
    ],
    "network": {"n_layers": 6, "channels": 24, "kernel_size": 5, "padding": "zeros"},
    "training": {"epochs": 30, "batch_size": 16, "learning_rate": 1e-3, "validation": 0.1},
    "transfer": {"fraction": 0.1, "epochs": 40, "patience": 6, "batch_size": 4,
                 "learning_rate": 2e-3, "validation": 0.2},
    "sweep": {"enabled": True, "seeds": 2, "baselines": ["scratch"]},
    "recommend": {"probe": {"epochs": 4}},
    "les": {"enabled": True, "t_end": 3.0, "save_interval": 0.25, "initial_states": 2,
            "baseline": ["smagorinsky", "dynamic-smagorinsky"]},
}

#: Physics closures the a posteriori stage may run (``les.baseline``) besides no closure.
LES_BASELINES = ("smagorinsky", "dynamic-smagorinsky")
#: Defaults of the ``[les]`` keys that are not given.
LES_DEFAULTS = {"enabled": True, "t_end": 5.0, "save_interval": 0.5, "initial_states": 1,
                "dt": None, "baseline": list(LES_BASELINES)}

_SECTIONS = {"experiment", "base", "targets", "network", "training", "transfer", "sweep", "les",
             "budget", "recommend"}
_TRAINING_KEYS = {"epochs", "batch_size", "learning_rate", "validation", "patience", "seed"}
_TRANSFER_KEYS = _TRAINING_KEYS | {"fraction", "n_samples", "renormalize"}
_BASE_TRAINING_KEYS = _TRAINING_KEYS | {"learning_curve"}
_SWEEP_KEYS = {"enabled", "layers", "seeds", "baselines", "alpha"}
_BUDGET_KEYS = {"enabled", "target", "fractions"}
_RECOMMEND_KEYS = {"methods", "default"}
_LES_KEYS = {"enabled", "t_end", "save_interval", "baseline", "initial_states", "dt"}
_NETWORK_KEYS = {"n_layers", "channels", "kernel_size", "padding", "activation", "precision"}


def _fail(key, message):
    raise ConfigError(f"config key {key!r}: {message}")


def _check_keys(section: dict, allowed: set, where: str):
    if not isinstance(section, dict):
        _fail(where, f"must be a table, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        _fail(f"{where}.{unknown[0]}" if where else unknown[0],
              f"unknown key; expected one of {sorted(allowed)}")


def _positive(value, key, integer=False, allow_zero=False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (
            not integer and not math.isfinite(value)):
        _fail(key, f"must be a{'n integer' if integer else ' number'}, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        _fail(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def _flow(raw: dict, where: str) -> FlowConfig:
    _check_keys(raw, _FLOW_KEYS | _CASE_FIELDS, where)
    if "case" not in raw:
        _fail(f"{where}.case", "is missing (a preset name, see `xtl cases`)")
    from .cases import list_cases

    if raw["case"] not in list_cases():
        _fail(f"{where}.case", f"unknown preset {raw['case']!r}; presets are {list_cases()}")
    overrides = dict(raw.get("overrides", {}))
    overrides.update({k: raw[k] for k in _CASE_FIELDS & set(raw)})
    for key in ("n", "n_les"):
        if key in overrides:
            _positive(overrides[key], f"{where}.{key}", integer=True)
    for key in ("Re", "dt"):
        if key in overrides:
            _positive(overrides[key], f"{where}.{key}")
    flow = FlowConfig(
        name=str(raw.get("name", raw["case"])),
        case=raw["case"],
        overrides=overrides,
        members=_positive(raw.get("members", 1), f"{where}.members", integer=True),
        spin_up=_positive(raw.get("spin_up", 20.0), f"{where}.spin_up", allow_zero=True),
        t_end=_positive(raw.get("t_end", 30.0), f"{where}.t_end"),
        save_interval=_positive(raw.get("save_interval", 0.1), f"{where}.save_interval"),
        filter=str(raw.get("filter", "gaussian")),
        control=_boolean(raw.get("control", False), f"{where}.control"),
    )
    if flow.t_end < flow.spin_up:
        _fail(f"{where}.t_end", f"must not be smaller than spin_up={flow.spin_up}")
    try:
        flow.make_case()
    except (TypeError, ValueError) as err:
        _fail(where, str(err))
    return flow


def _training_section(raw) -> dict:
    section = _section(raw, "training", _BASE_TRAINING_KEYS)
    curve = section.get("learning_curve", [])
    if not isinstance(curve, list) or any(isinstance(f, bool) or not isinstance(f, (int, float))
                                          or not 0 < f < 1 for f in curve):
        _fail("training.learning_curve", "must be a list of fractions in (0, 1) of the base "
                                         f"training set, got {curve!r}")
    return section


def _boolean(value, key):
    if not isinstance(value, bool):
        _fail(key, f"must be true or false, got {value!r}")
    return value


def _sweep_section(raw) -> dict:
    from .sweep import BASELINES

    section = _section(raw, "sweep", _SWEEP_KEYS)
    seeds = section.get("seeds", 1)
    if isinstance(seeds, list):
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                            for s in seeds) or len(set(seeds)) != len(seeds):
            _fail("sweep.seeds", f"must be a count >= 1 or a list of distinct ints >= 0, got "
                                 f"{seeds!r}")
    else:
        _positive(seeds, "sweep.seeds", integer=True)
    baselines = section.get("baselines", [])
    if not isinstance(baselines, list) or any(b not in BASELINES for b in baselines):
        _fail("sweep.baselines", f"must be a list among {list(BASELINES)}, got {baselines!r}")
    if "alpha" in section and not (isinstance(section["alpha"], float)
                                   and 0 < section["alpha"] < 1):
        _fail("sweep.alpha", f"must be a number in (0, 1), got {section['alpha']!r}")
    return section


def _budget_section(raw, target_names) -> dict:
    section = _section(raw, "budget", _BUDGET_KEYS)
    if not section.get("enabled", bool(section)):
        return {}
    fractions = section.get("fractions")
    if not isinstance(fractions, list) or not fractions or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1
            for f in fractions):
        _fail("budget.fractions", "must be a list of fractions in (0, 1] of the base training "
                                  f"set's size, got {fractions!r}")
    target = section.get("target", target_names[0])
    if target not in target_names:
        _fail("budget.target", f"must name a target, one of {target_names}; got {target!r}")
    return {"enabled": True, "target": target, "fractions": sorted(float(f) for f in fractions)}


def _recommend_section(raw) -> dict:
    from .recommend import DEFAULT_METHOD, available_recommenders

    section = dict(raw.get("recommend", {}))
    methods = set(available_recommenders())
    _check_keys(section, _RECOMMEND_KEYS | methods, "recommend")
    chosen = section.get("methods", sorted(methods))
    if not isinstance(chosen, list) or not chosen or any(m not in methods for m in chosen):
        _fail("recommend.methods", f"must be a list among {sorted(methods)}, got {chosen!r}")
    default = section.get("default", DEFAULT_METHOD if DEFAULT_METHOD in chosen else chosen[0])
    if default not in chosen:
        _fail("recommend.default", f"must be one of recommend.methods {chosen}, got "
                                   f"{default!r}")
    options = {}
    for m in methods & set(section):
        options[m] = _method_options(m, section[m])
    return {"methods": list(chosen), "default": default, "options": options}


def _method_options(method, table) -> dict:
    """Options of a recommender, checked against its signature."""
    import inspect

    from .recommend import recommender

    where = f"recommend.{method}"
    if not isinstance(table, dict):
        _fail(where, f"must be a table of the method's options, got {table!r}")
    params = inspect.signature(recommender(method)).parameters
    allowed = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    _check_keys(table, allowed, where)
    return dict(table)


def _les_section(raw) -> dict:
    section = _section(raw, "les", _LES_KEYS)
    if "enabled" in section:
        _boolean(section["enabled"], "les.enabled")
    if "initial_states" in section:
        _positive(section["initial_states"], "les.initial_states", integer=True)
    if "dt" in section:
        _positive(section["dt"], "les.dt")
    baseline = section.get("baseline", list(LES_BASELINES))
    names = [baseline] if isinstance(baseline, str) else baseline
    if not isinstance(names, list) or any(b not in LES_BASELINES for b in names):
        _fail("les.baseline", f"must be one of {list(LES_BASELINES)} or a list of them "
                              f"(no closure always runs), got {baseline!r}")
    t_end, save = section.get("t_end", LES_DEFAULTS["t_end"]), section.get(
        "save_interval", LES_DEFAULTS["save_interval"])
    if save > t_end:
        _fail("les.save_interval", f"must not exceed les.t_end = {t_end}, got {save}")
    return section


def _section(raw, name, allowed):
    section = dict(raw.get(name, {}))
    _check_keys(section, allowed, name)
    for key in ("epochs", "batch_size", "n_samples", "patience", "n_layers", "kernel_size"):
        if key in section:
            _positive(section[key], f"{name}.{key}", integer=True)
    for key in ("learning_rate", "t_end", "save_interval"):
        if key in section:
            _positive(section[key], f"{name}.{key}")
    if "fraction" in section:
        value = _positive(section["fraction"], f"{name}.fraction")
        if value > 1:
            _fail(f"{name}.fraction", f"must be in (0, 1], got {value}")
    if "channels" in section:
        channels = section["channels"]
        for c in channels if isinstance(channels, list) else [channels]:
            _positive(c, f"{name}.channels", integer=True)
    return section


def parse_config(raw: dict) -> ExperimentConfig:
    """Validate a configuration mapping (as read from TOML) into an :class:`ExperimentConfig`.

    Parameters
    ----------
    raw : dict
        The TOML tables (see the module docstring).

    Returns
    -------
    ExperimentConfig

    Raises
    ------
    ConfigError
        Naming the first bad key.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a table, got {type(raw).__name__}")
    _check_keys(raw, _SECTIONS, "")
    experiment = dict(raw.get("experiment", {}))
    _check_keys(experiment, {"name", "seed", "min_decades"}, "experiment")
    if "base" not in raw:
        _fail("base", "is missing (the base flow)")
    targets = raw.get("targets")
    if not targets:
        _fail("targets", "is missing: give at least one [[targets]] table")
    if not isinstance(targets, list):
        _fail("targets", "must be an array of tables ([[targets]])")
    flows = [_flow(t, f"targets[{i}]") for i, t in enumerate(targets)]
    base = _flow(raw["base"], "base")
    names = [base.name] + [f.name for f in flows]
    if len(set(names)) != len(names):
        _fail("targets", f"flow names (base and targets) must be unique, got {names}: give a "
                         "target that reuses a preset its own `name`")
    seed = experiment.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        _fail("experiment.seed", f"must be an integer, got {seed!r}")
    min_decades = _positive(experiment.get("min_decades", 0.3), "experiment.min_decades",
                            allow_zero=True)
    return ExperimentConfig(
        name=str(experiment.get("name", "experiment")),
        seed=seed,
        base=base,
        targets=tuple(flows),
        network=_section(raw, "network", _NETWORK_KEYS),
        training=_training_section(raw),
        transfer=_section(raw, "transfer", _TRANSFER_KEYS),
        sweep=_sweep_section(raw),
        les=_les_section(raw),
        min_decades=float(min_decades),
        budget=_budget_section(raw, [f.name for f in flows]),
        recommend=_recommend_section(raw),
    )


def load_config(source=None) -> ExperimentConfig:
    """Read and validate an experiment config.

    Parameters
    ----------
    source : path, dict or None
        A TOML file, an already-parsed mapping, or None for :data:`DEMO_CONFIG`.
    """
    if source is None:
        return parse_config(copy.deepcopy(DEMO_CONFIG))
    if isinstance(source, dict):
        return parse_config(copy.deepcopy(source))
    import tomllib

    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    return parse_config(raw)
