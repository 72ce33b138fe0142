"""The experiment configuration: a TOML file, validated, with the demo's defaults.

An experiment has a base flow and one or more targets, a network, training and
transfer settings. A table parses into the options object of the function that uses
it (``[training]`` into :class:`~xtl.nn.backends.loop.FitOptions`, ``[sweep]`` and
``[transfer]`` into :class:`~xtl.nn.sweep.SweepOptions`, a flow's times into a
:class:`~xtl.solver.options.Schedule`, ``[les]``'s into a
:class:`~xtl.solver.les.LesSchedule`, ...), which checks its values; this module
checks the key names and what spans tables (swept layers the network has, times that
are whole steps, a budget target that is a target). Every error is a
:class:`ConfigError` naming the dotted key (``targets[1].members``).

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

    [network]                     # xtl.nn.spec.NetworkSpec fields
    n_layers = 6
    channels = 24

    [training]                    # FitOptions (epochs, batch_size, learning_rate,
    epochs = 30                   # patience, seed) and validation

    [transfer]                    # FitOptions and validation, renormalize, plus the TL
    fraction = 0.1                # set size: of the base training set's (or n_samples)

    [sweep]                       # layers = [...] to sweep only some (the recommended
    enabled = true                # layers are always included); false: only those
    seeds = 2                     # a count (from experiment.seed) or a list of seeds
    pairs = false                 # true (or target names): also every pair of layers

    [data]                        # optional: the variables the networks map (the
    inputs = ["psi", "omega"]     # defaults shown) and, for DNS read from files,
    outputs = ["pi"]              # the coarse-graining pair (scalar, streamfunction)

    [les]                         # the a posteriori stage: no closure, the physics
    enabled = true                # baselines and the networks, each from several
    t_end = 50.0                  # held-out target states (> 50 large-eddy turnover
    save_interval = 0.5           # times of the 256² flows forced at kf = 4)
    initial_states = 2
    baseline = ["smagorinsky", "dynamic-smagorinsky"]

A flow may instead be read from files (:class:`FileFlowConfig`): ``path`` is a glob
or one path, netCDF files or zarr stores, relative to the config file's folder::

    [base]
    name = "model-run"
    path = "runs/base/*.nc"       # one member per file, combined along `member`
    n_les = 64                    # DNS files: coarse-grained to this grid (filter = ...)
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..nn.backends.loop import FitOptions
from ..nn.sweep import SweepOptions
from ..solver.les import LesSchedule
from ..options import Options, check_bool, check_float, check_fraction, check_int

__all__ = ["ConfigError", "FlowConfig", "flow_bytes", "FileFlowConfig", "DataConfig", "ExperimentConfig", "load_config", "parse_config",
           "DEMO_CONFIG", "TrainingConfig", "TransferConfig", "SweepConfig", "BudgetConfig",
           "RecommendConfig", "LesConfig", "les_closure_names", "n_snapshots", "split_sizes",
           "TEST_FRACTION"]


class ConfigError(ValueError):
    """An invalid experiment configuration (the message names the key)."""


def les_closure_names() -> tuple:
    """Names of the physics closures the a posteriori stage may run (``les.baseline``).

    The closures registered in :mod:`xtl.physics.closures` (:func:`~xtl.physics.closures.available_closures`)
    other than "no closure", which the stage always runs: :class:`LesConfig`
    refuses any other name and its default is all of them.
    """
    from ..physics.closures import available_closures

    return tuple(n for n in available_closures() if n not in ("none", "no closure"))


# ------------------------------------------------------------------ key checks
def _fail(key, message):
    raise ConfigError(f"config key {key!r}: {message}")


def _check_keys(section: dict, allowed: set, where: str):
    if not isinstance(section, dict):
        _fail(where, f"must be a table, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        _fail(f"{where}.{unknown[0]}" if where else unknown[0],
              f"unknown key; expected one of {sorted(allowed)}")


def _config_error(where: str, err: Exception, names, prefix: str = "") -> ConfigError:
    """``err`` of a value check as a :class:`ConfigError` naming the dotted key.

    The checks' messages start with the option's name (``"epochs must be an int >=
    1, got 0"``, ``"Case.n must ..."`` with ``prefix="Case."``): when that name is one
    of ``names`` the key is ``where.<name>`` and the message the rest, else the key
    is ``where``. A TypeError becomes a ConfigError too (a config is a value: every
    config error is a ValueError); the original is the ConfigError's ``__cause__``.
    """
    name, _, rest = str(err).partition(" ")
    name = name.removeprefix(prefix)
    if name in names:
        return ConfigError(f"config key {f'{where}.{name}'!r}: {rest}")
    return ConfigError(f"config key {where!r}: {err}")


def _parse(make, values: dict, where: str, names=None, prefix: str = ""):
    """``make(**values)`` (an options class, a check), its TypeErrors and ValueErrors
    re-raised by :func:`_config_error`, naming ``where.<key>`` for a key of ``names``
    (default: those of ``values``)."""
    try:
        return make(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise _config_error(where, err, set(values) if names is None else names,
                            prefix) from err


def _table(raw: dict, name: str, allowed: set) -> dict:
    """The table ``name`` of ``raw`` (empty when absent), its keys checked."""
    table = dict(raw.get(name, {}))
    _check_keys(table, allowed, name)
    return table


# ------------------------------------------------------------------ sections
class Section(Options):
    """A config table as a frozen dataclass: :meth:`check` validates its own keys with
    the shared validators of :mod:`xtl.options` (errors name ``section.key``); the
    keys an options object holds are checked by that object."""

    section: ClassVar[str] = ""

    def __post_init__(self):
        _parse(self.check, {}, self.section, self.names())

    def check(self) -> None:
        """Checks of the section's own keys, normalising them (in place)."""

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def to_table(self) -> dict:
        """The section as a JSON-able table (tuples as lists, options as tables)."""
        def plain(v):
            if isinstance(v, Options):
                return {k: plain(x) for k, x in v.to_dict().items()}
            return list(v) if isinstance(v, tuple) else v
        return {k: plain(v) for k, v in self.to_dict().items()}


@dataclass(frozen=True)
class TrainingConfig(Section):
    """``[training]``: how the base network is fitted (:func:`xtl.train`).

    Attributes
    ----------
    fit : FitOptions
        ``epochs``, ``batch_size``, ``learning_rate``, ``patience``, ``seed`` (default
        ``experiment.seed``), checked by :class:`~xtl.nn.backends.loop.FitOptions`.
    validation : float
        Fraction of the training samples held out for validation, in [0, 1).
    learning_curve : tuple of float
        Fractions in (0, 1) of the base training set to train on as well.
    """

    section: ClassVar[str] = "training"
    fit: FitOptions = field(default_factory=FitOptions)
    validation: float | None = 0.1
    learning_curve: tuple = ()

    def check(self):
        from ..nn.training import check_validation

        self._set("validation", check_validation(self.validation))
        curve = self.learning_curve
        if not isinstance(curve, (list, tuple)):
            _fail("training.learning_curve", "must be a list of fractions in (0, 1) of the "
                                             f"base training set, got {curve!r}")
        self._set("learning_curve", tuple(check_fraction(f, "learning_curve") for f in curve))


@dataclass(frozen=True)
class TransferConfig(Section):
    """``[transfer]``: how a layer is re-trained (:func:`xtl.transfer`) and on how much.

    Attributes
    ----------
    fit : FitOptions
        As in :class:`TrainingConfig` (``seed`` is unused: the sweep has its seeds).
    validation : float
        Fraction of the re-training samples held out for validation, in [0, 1).
    fraction : float
        Re-training set size as a fraction in (0, 1] of the base training set's size.
    n_samples : int, optional
        Or this many samples (capped by the target's pool).
    renormalize : bool
        As in :func:`xtl.transfer`.
    """

    section: ClassVar[str] = "transfer"
    fit: FitOptions = field(default_factory=FitOptions)
    validation: float | None = 0.1
    fraction: float = 0.1
    n_samples: int | None = None
    renormalize: bool = False

    def check(self):
        from ..nn.training import check_validation

        self._set("validation", check_validation(self.validation))
        self._set("fraction", check_float(self.fraction, "fraction", positive=True,
                                          maximum=1.0))
        self._set("n_samples", check_int(self.n_samples, "n_samples", minimum=1,
                                         optional=True))
        self._set("renormalize", check_bool(self.renormalize, "renormalize"))


@dataclass(frozen=True)
class SweepConfig(Section):
    """``[sweep]``: which layers are re-trained, and how (the sweep's options).

    Attributes
    ----------
    enabled : bool
        False: re-train only the recommended layers.
    layers : tuple of int, optional
        Sweep only these (plus the recommended); None: every layer. Checked against
        the network by :func:`xtl.nn.spec.check_layers`.
    options : SweepOptions
        ``seeds`` (a count from ``experiment.seed``, or the seeds), ``baselines`` and
        ``alpha`` of ``[sweep]``; ``fit``, ``validation`` and ``renormalize`` of
        ``[transfer]``. :func:`xtl.layer_sweep` gets them whole.
    pairs : bool or tuple of str
        Also re-train every pair of the swept layers, under the same seeds and
        subsets (stage ``pairs-<target>``, ``results/pairs-<target>.nc``; no
        baselines, no saved models): 55 pairs for 11 layers. True: for every
        target; a list of target names: for those.
    """

    section: ClassVar[str] = "sweep"
    enabled: bool = True
    layers: tuple | None = None
    options: SweepOptions = field(default_factory=SweepOptions)
    pairs: bool = False

    def check(self):
        self._set("enabled", check_bool(self.enabled, "enabled"))
        pairs = self.pairs
        if isinstance(pairs, list):
            pairs = tuple(pairs)
        if not isinstance(pairs, bool) and not (
                isinstance(pairs, tuple) and pairs and all(isinstance(t, str) for t in pairs)):
            _fail("sweep.pairs", f"must be true, false or a list of target names, got {pairs!r}")
        self._set("pairs", pairs)

    def pairs_of(self, target: str) -> bool:
        """Whether the pairs of layers are swept on ``target``."""
        return self.pairs is True or (isinstance(self.pairs, tuple) and target in self.pairs)

    def sweeps_every_layer(self) -> bool:
        """Whether the sweep re-trains every layer (so needs no recommendation)."""
        return self.enabled and self.layers is None


@dataclass(frozen=True)
class BudgetConfig(Section):
    """``[budget]``: the sweep at other re-training set sizes (disabled by default).

    Attributes
    ----------
    target : str
        The target swept (checked against the targets by :func:`parse_config`).
    fractions : tuple of float
        Re-training set sizes in (0, 1] of the base training set's size, sorted.
    """

    section: ClassVar[str] = "budget"
    enabled: bool = False
    target: str | None = None
    fractions: tuple = ()

    def check(self):
        self._set("enabled", check_bool(self.enabled, "enabled"))
        if not self.enabled:
            return
        fractions = self.fractions
        if not isinstance(fractions, (list, tuple)) or not fractions:
            _fail("budget.fractions", "must be a list of fractions in (0, 1] of the base "
                                      f"training set's size, got {fractions!r}")
        self._set("fractions", tuple(sorted(
            check_float(f, "fractions", positive=True, maximum=1.0) for f in fractions)))
        if not isinstance(self.target, str):
            _fail("budget.target", f"must name a target, got {self.target!r}")


@dataclass(frozen=True)
class RecommendConfig(Section):
    """``[recommend]``: the recommenders run before any re-training.

    Attributes
    ----------
    methods : tuple of str
        Registered recommenders (:func:`xtl.explain.recommend.available_recommenders`) the
        ``recommend-<target>`` stages run; default
        :data:`xtl.explain.recommend.STAGE_METHODS`.
    default : str
        The one whose choice a partial sweep adds; default
        :data:`xtl.explain.recommend.DEFAULT_METHOD` when the stages run it, else
        :data:`xtl.explain.recommend.STAGE_DEFAULT`, else the first of ``methods``.
    options : dict
        ``{method: {option: value}}``, keyword-only options of each method.
    """

    section: ClassVar[str] = "recommend"
    methods: tuple | None = None
    default: str | None = None
    options: dict = field(default_factory=dict)

    def check(self):
        from ..explain.recommend import (DEFAULT_METHOD, STAGE_DEFAULT, STAGE_METHODS,
                                         available_recommenders)

        known = available_recommenders()
        chosen = list(STAGE_METHODS) if self.methods is None else self.methods
        if not isinstance(chosen, (list, tuple)) or not chosen or any(
                m not in known for m in chosen):
            _fail("recommend.methods", f"must be a list among {known}, got {chosen!r}")
        self._set("methods", tuple(chosen))
        default = self.default
        if default is None:
            default = next((m for m in (DEFAULT_METHOD, STAGE_DEFAULT) if m in chosen),
                           chosen[0])
        if default not in chosen:
            _fail("recommend.default", f"must be one of recommend.methods {list(chosen)}, "
                                       f"got {default!r}")
        self._set("default", default)
        for method, table in self.options.items():
            _method_options(method, table, known)

    def method_options(self, method: str) -> dict:
        """The configured options of ``method`` (a copy)."""
        return dict(self.options.get(method, {}))

    def stage_table(self, methods=None) -> dict:
        """What a stage running ``methods`` (default :attr:`methods`) hashes: them, the
        default, and their options only (a ``[recommend.<method>]`` table of another
        method, such as one the benchmark alone runs, leaves its key alone)."""
        methods = self.methods if methods is None else tuple(methods)
        table = self.to_table()
        table["methods"] = list(methods)
        table["options"] = {m: o for m, o in table["options"].items() if m in methods}
        return table


@dataclass(frozen=True)
class BenchmarkConfig(Section):
    """``[benchmark]``: every recommender and the constant guesses scored against the
    sweeps (:func:`xtl.explain.benchmark.benchmark_recommenders`; disabled by default, enabled by
    the table).

    Attributes
    ----------
    methods : tuple of str
        Recommenders scored on every case (default: every registered one but
        ``"prior"``, which the benchmark scores as a constant guess). Those the
        ``recommend-<target>`` stages ran (``[recommend] methods``) are read from
        them; the ``benchmark`` stage runs the others, with the options of their
        ``[recommend.<method>]`` tables.
    history : tuple of str
        Sweep files of earlier experiments added to the prior's evidence.
    strength : float
        The prior's pseudo-sweeps (> 0).
    """

    section: ClassVar[str] = "benchmark"
    enabled: bool = False
    methods: tuple | None = None
    history: tuple = ()
    strength: float = 1.0

    def check(self):
        from ..explain.recommend import available_recommenders

        self._set("enabled", check_bool(self.enabled, "enabled"))
        known = [m for m in available_recommenders() if m != "prior"]
        chosen = known if self.methods is None else self.methods
        if not isinstance(chosen, (list, tuple)) or any(m not in known for m in chosen):
            _fail("benchmark.methods", f"must be a list among {known}, got {chosen!r}")
        self._set("methods", tuple(chosen))
        if not isinstance(self.history, (list, tuple)) or not all(
                isinstance(p, str) for p in self.history):
            _fail("benchmark.history", "must be a list of sweep files (netCDF paths), got "
                                       f"{self.history!r}")
        self._set("history", tuple(self.history))
        self._set("strength", check_float(self.strength, "strength", positive=True))


def _method_options(method, table, known) -> None:
    """Options of a recommender, checked against its signature."""
    import inspect

    from ..explain.recommend import recommender, recommender_options

    where = f"recommend.{method}"
    if method not in known:
        _fail(where, f"unknown recommender; expected one of {known}")
    if not isinstance(table, dict):
        _fail(where, f"must be a table of the method's options, got {table!r}")
    params = inspect.signature(recommender(method)).parameters
    _check_keys(table, {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}, where)
    options_class = recommender_options(method)
    if options_class is not None:  # the values too, by the method's own options
        _parse(options_class, table, where)


@dataclass(frozen=True)
class LesConfig(Section):
    """``[les]``: the a posteriori stage — the one place its defaults live.

    Attributes
    ----------
    schedule : LesSchedule
        ``t_end``, ``save_interval`` (``<= t_end``) and ``dt`` (default the LES case's)
        of each LES run, checked by :class:`~xtl.solver.les.LesSchedule`.
    initial_states : int
        Held-out target states each closure starts from.
    baseline : tuple of str
        Physics closures among :func:`les_closure_names` (default all of them).
    """

    section: ClassVar[str] = "les"
    enabled: bool = True
    schedule: LesSchedule = LesSchedule(t_end=5.0, save_interval=0.5)
    initial_states: int = 1
    baseline: tuple = field(default_factory=les_closure_names)

    def check(self):
        self._set("enabled", check_bool(self.enabled, "enabled"))
        self._set("initial_states", check_int(self.initial_states, "initial_states",
                                              minimum=1))
        valid = les_closure_names()
        names = [self.baseline] if isinstance(self.baseline, str) else self.baseline
        if not isinstance(names, (list, tuple)) or any(b not in valid for b in names):
            _fail("les.baseline", f"must be one of {list(valid)} or a list of them "
                                  f"(no closure always runs), got {self.baseline!r}")
        self._set("baseline", tuple(names))
        schedule = self.schedule
        if schedule.save_interval > schedule.t_end:
            _fail("les.save_interval", f"must not exceed les.t_end = {schedule.t_end}, got "
                                       f"{schedule.save_interval}")


#: The default variables of ``[data]``: (ψ̄, ω̄) → Π, the coarse-graining pair (ω, ψ).
_DATA_DEFAULTS = {"inputs": ("psi", "omega"), "outputs": ("pi",), "channels": None,
                  "scalar": "omega", "streamfunction": "psi"}


@dataclass(frozen=True)
class DataConfig(Section):
    """``[data]``: the variables the networks map, and how DNS read from files is
    coarse-grained.

    Attributes
    ----------
    inputs, outputs : tuple of str
        Input and output variables of the networks (default ψ̄, ω̄ → Π), as
        :class:`xtl.nn.spec.Variables` takes them.
    channels : str, optional
        A dim whose entries become channels (e.g. ``"lev"``); default none.
    scalar, streamfunction : str
        The pair :func:`xtl.coarse_grain` coarse-grains in DNS read from files
        (default ``"omega"``, ``"psi"``); the SGS term of another pair is
        ``pi_<scalar>``.
    """

    section: ClassVar[str] = "data"
    inputs: tuple = _DATA_DEFAULTS["inputs"]
    outputs: tuple = _DATA_DEFAULTS["outputs"]
    channels: str | None = None
    scalar: str = "omega"
    streamfunction: str = "psi"

    def check(self):
        variables = self.variables()  # the networks' own checks (their messages name the key)
        self._set("inputs", variables.inputs)
        self._set("outputs", variables.outputs)
        for key in ("scalar", "streamfunction"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key} must be a variable name, got {getattr(self, key)!r}")
        if self.scalar == self.streamfunction:
            raise ValueError(f"streamfunction must differ from the scalar, got "
                             f"{self.streamfunction!r} for both")

    @property
    def is_default(self) -> bool:
        """Whether every key has its default (the stage keys then leave ``[data]`` out)."""
        return all(getattr(self, k) == v for k, v in _DATA_DEFAULTS.items())

    @property
    def default_pair(self) -> bool:
        """Whether the coarse-graining pair is the default (ω, ψ)."""
        return (self.scalar, self.streamfunction) == ("omega", "psi")

    def variables(self):
        """The :class:`xtl.nn.spec.Variables` of ``inputs``, ``outputs`` and ``channels``."""
        from ..nn.spec import Variables

        return Variables(self.inputs, self.outputs, self.channels)

    def train_keywords(self) -> dict:
        """``inputs``, ``outputs``, ``channels`` for :func:`xtl.train`; empty when they are
        the defaults (so a default ``[data]`` trains exactly as before)."""
        names = ("inputs", "outputs", "channels")
        if all(getattr(self, k) == _DATA_DEFAULTS[k] for k in names):
            return {}
        return {k: (list(getattr(self, k)) if k != "channels" else self.channels)
                for k in names}

    def coarse_keywords(self) -> dict:
        """``scalar`` and ``streamfunction`` for :func:`xtl.coarse_grain`; empty for the
        default pair."""
        return {} if self.default_pair else {"scalar": self.scalar,
                                             "streamfunction": self.streamfunction}

    @property
    def variable_names(self) -> tuple:
        """Inputs then outputs."""
        return self.inputs + self.outputs


def _data(raw) -> DataConfig:
    table = _table(raw, "data", set(_DATA_DEFAULTS))
    return _parse(DataConfig, table, "data")


# --------------------------------------------------------------------- flows
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
        Filter of the coarse-graining (one of :data:`xtl.data.coarse.FILTERS`).
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
        from ..physics.cases import get_case

        return get_case(self.case, **self.overrides)

    def coarse_graining(self):
        """The :class:`~xtl.data.coarse.CoarseGraining` of this flow's LES data: its
        case's ``n_les`` and ``filter``."""
        from ..data.coarse import CoarseGraining

        return CoarseGraining(self.make_case().n_les, self.filter)


def _flow(raw: dict, where: str, folder=None):
    """A flow table, its values kept as written (the stage keys hash them): a preset's
    :class:`FlowConfig`, or with ``path`` a :class:`FileFlowConfig` (relative paths
    resolved against ``folder``)."""
    if isinstance(raw, dict) and "path" in raw:
        return _file_flow(raw, where, folder)
    _check_keys(raw, _FLOW_KEYS | _CASE_FIELDS | {"path"}, where)
    if "case" not in raw:
        _fail(f"{where}.case", "is missing (a preset name, see `xtl cases`; or `path` to read "
                               "the flow from files)")
    from ..physics.cases import list_cases

    if raw["case"] not in list_cases():
        _fail(f"{where}.case", f"unknown preset {raw['case']!r}; presets are {list_cases()}")
    overrides = dict(raw.get("overrides", {}))
    overrides.update({k: raw[k] for k in _CASE_FIELDS & set(raw)})
    own = {k: raw[k] for k in ("members", "spin_up", "t_end", "save_interval", "filter",
                               "control") if k in raw}
    flow = FlowConfig(name=str(raw.get("name", raw["case"])), case=raw["case"],
                      overrides=overrides, **own)
    case = _check_flow(flow, where)
    _check_flow_times(flow, case, where)
    return flow


#: Keys of a flow read from files (:class:`FileFlowConfig`).
_FILE_FLOW_KEYS = {"name", "path", "n_les", "filter", "control"}


@dataclass(frozen=True)
class FileFlowConfig:
    """A flow read from files instead of simulated: LES data as is, or DNS to coarse-grain.

    Attributes
    ----------
    name : str
        Label used in file names and the report.
    path : str
        A glob or one path of netCDF files or zarr stores (``*.zarr``), absolute
        (:func:`load_config` resolves a relative one against the config file's folder).
        The files are opened lazily (dask) and combined along ``member``, one member
        per file (a file with a ``member`` dim adds its members); they must share
        their other dims.
    n_les : int, optional
        The LES grid of DNS files (default the files' ``case_n_les`` attribute).
    filter : str
        Filter of the coarse-graining of DNS files.
    control : bool
        As :attr:`FlowConfig.control`.

    Notes
    -----
    Files holding every ``[data]`` input and output are LES data, used as they are;
    files holding the coarse-graining pair (``[data]`` ``scalar`` and
    ``streamfunction``) but not the outputs are DNS, coarse-grained by
    :func:`xtl.coarse_grain`. A flow from files has no case, so the a posteriori
    stage (LES runs of a target's case) skips it.
    """

    name: str
    path: str
    n_les: int | None = None
    filter: str = "gaussian"
    control: bool = False

    def files(self) -> list:
        """The files (or stores) ``path`` names, sorted.

        Raises
        ------
        FileNotFoundError
            No file matches (the message names the resolved pattern).
        """
        import glob

        found = sorted(Path(p) for p in glob.glob(self.path))
        if not found:
            raise FileNotFoundError(f"no file matches {self.path!r}")
        return found

    def fingerprint(self) -> list:
        """``[[file, size in bytes, mtime in ns], ...]`` of the files (a zarr store: of
        every file in it): what a stage key hashes, so editing a file re-runs the stage."""
        rows = []
        for path in self.files():
            parts = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for part in parts:
                st = part.stat()
                rows.append([str(part), st.st_size, st.st_mtime_ns])
        return rows


def _file_flow(raw: dict, where: str, folder) -> FileFlowConfig:
    """A flow table with ``path``: its keys checked, its path resolved against ``folder``."""
    from ..data.coarse import check_filter
    from ..physics.cases import check_n_les

    preset = sorted(set(raw) - _FILE_FLOW_KEYS)
    if preset:
        _fail(f"{where}.{preset[0]}", f"a flow read from files (path) takes only "
                                      f"{sorted(_FILE_FLOW_KEYS)}; a preset's keys ({preset}) "
                                      "belong to a simulated flow (case = ...)")
    pattern = raw["path"]
    if not isinstance(pattern, str) or not pattern:
        _fail(f"{where}.path", f"must be a path or a glob of netCDF files or zarr stores, got "
                               f"{pattern!r}")
    if "name" not in raw:
        _fail(f"{where}.name", "is missing (a flow read from files has no preset to name it)")
    resolved = Path(pattern).expanduser()
    if not resolved.is_absolute():
        resolved = Path(folder or ".").absolute() / resolved
    flow = FileFlowConfig(name=str(raw["name"]), path=str(resolved),
                          **{k: raw[k] for k in ("n_les", "filter", "control") if k in raw})
    try:
        if flow.n_les is not None:
            check_n_les(flow.n_les)
        check_filter(flow.filter)
        check_bool(flow.control, "control")
    except (TypeError, ValueError) as err:
        raise _config_error(where, err, _FILE_FLOW_KEYS) from err
    try:
        flow.files()
    except FileNotFoundError as err:
        _fail(f"{where}.path", f"{err} (written {pattern!r})")
    return flow


def _check_flow(flow: FlowConfig, where: str):
    """A flow's values, by the checks of what consumes them (the ensemble's members, the
    run's :class:`~xtl.solver.options.Schedule`, the coarse-graining's filter, the
    :class:`xtl.Case`); returns its case."""
    from ..data.coarse import check_filter
    from ..solver.options import Schedule

    try:
        check_int(flow.members, "members", minimum=1)
        check_bool(flow.control, "control")
        Schedule(t_end=flow.t_end, save_interval=flow.save_interval, spin_up=flow.spin_up)
        check_filter(flow.filter)
    except (TypeError, ValueError) as err:
        raise _config_error(where, err, _FLOW_KEYS) from err
    return _parse(flow.make_case, {}, where, _CASE_FIELDS, prefix="Case.")


def _check_multiple(value: float, dt: float, key: str, what: str) -> None:
    """Refuse ``value`` unless it is a whole number (>= 1, or 0) of steps ``dt``,
    by the solver's rule (:func:`xtl.solver.run.whole_steps`), suggesting the nearest."""
    from ..solver.run import whole_steps

    steps = whole_steps(value, dt)
    if steps is None or (steps < 1 and value != 0):
        _fail(key, f"{value} is not a multiple of {what}; use a multiple, e.g. "
                   f"{max(1, round(value / dt)) * dt:.10g}")


def n_snapshots(flow: FlowConfig) -> int:
    """Snapshots the DNS of ``flow`` (its times multiples of its case's time step)
    stores per member, from ``spin_up`` to ``t_end``."""
    from ..solver.options import Schedule
    from ..solver.run import step_plan

    schedule = Schedule(t_end=flow.t_end, save_interval=flow.save_interval,
                        spin_up=flow.spin_up)
    return step_plan(flow.make_case(), schedule).n_snapshots


def _check_flow_times(flow: FlowConfig, case, where: str) -> None:
    """The times of a flow's DNS: whole numbers of its time step, and at least 2
    snapshots (training and test times)."""
    step = f"the DNS time step {case.dt:g} of flow {flow.name!r} ({where}.dt)"
    _check_multiple(flow.save_interval, case.dt, f"{where}.save_interval", step)
    _check_multiple(flow.spin_up, case.dt, f"{where}.spin_up", step)
    count = n_snapshots(flow)
    if count < 2:
        _fail(f"{where}.t_end", f"gives {count} snapshot from spin_up = {flow.spin_up} to "
                                f"t_end = {flow.t_end} every {flow.save_interval}; a flow needs "
                                f"at least 2 (training and test times): make t_end >= "
                                f"spin_up + {2 * flow.save_interval:g}")


#: Fraction of each flow's snapshots (the latest times) held out for testing.
TEST_FRACTION = 0.25


def split_sizes(n_times: int, test_fraction: float = TEST_FRACTION) -> tuple:
    """``(training times, test times)`` of a flow of ``n_times`` snapshots.

    The last ``test_fraction`` of the times (at least one) is the test set.

    Raises
    ------
    ValueError
        Fewer than 2 snapshots.
    """
    n_test = max(1, int(round(n_times * test_fraction)))
    if n_test >= n_times:
        raise ValueError(f"a flow needs at least 2 snapshots to split, got {n_times}")
    return n_times - n_test, n_test


# ---------------------------------------------------------------- experiment
@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment; see the module docstring for the TOML layout.

    Every table is parsed once into its typed section (:class:`TrainingConfig`,
    :class:`LesConfig`, ...); ``source`` keeps the validated tables as written:
    ``config.json`` stores them (``xtl report`` re-reads it) and the stages hash
    them (:meth:`table`), so a default is not part of a stage's key.
    """

    name: str
    seed: int
    base: FlowConfig
    targets: tuple
    network: dict
    training: TrainingConfig
    transfer: TransferConfig
    sweep: SweepConfig
    les: LesConfig
    min_decades: float = 0.3
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    source: dict | None = field(default=None, compare=False, repr=False)

    @property
    def seeds(self) -> list:
        """The sweep's seeds: ``[seed, seed + 1, ...]`` for a count, or the list given."""
        return list(self.sweep.options.seeds)

    @property
    def flows(self) -> tuple:
        """The base and every target."""
        return (self.base, *self.targets)

    def runs_aposteriori(self, target) -> bool:
        """Whether ``target`` gets an a posteriori stage: LES are enabled, the target is
        a preset (a case to run LES of) and the networks map (ψ̄, ω̄) → Π, the closure
        of xtl's own 2D LES."""
        from ..nn.spec import Variables

        return (self.les.enabled and not isinstance(target, FileFlowConfig)
                and self.data.variables() == Variables())

    def target(self, name: str) -> FlowConfig:
        """The target flow called ``name``."""
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(f"no target named {name!r}; targets are {[t.name for t in self.targets]}")

    def tables(self) -> dict:
        """The TOML tables as written (a copy): what ``config.json`` stores.

        Raises
        ------
        ValueError
            The config was not made by :func:`parse_config` (it has no ``source``).
        """
        if self.source is None:
            raise ValueError("this ExperimentConfig has no source tables; make it with "
                             "xtl.experiment.config.load_config")
        return copy.deepcopy(self.source)

    def table(self, name: str) -> dict:
        """The TOML table ``name`` as written (``{}`` when absent); see :meth:`tables`."""
        return self.tables().get(name, {})

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-safe), as the report shows it."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return json.loads(json.dumps(d, default=str))


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

_SECTIONS = {"experiment", "base", "targets", "network", "training", "transfer", "sweep", "les",
             "budget", "recommend", "benchmark", "data"}
_FIT_KEYS = {"epochs", "batch_size", "learning_rate", "patience", "seed"}
_NETWORK_KEYS = {"n_layers", "channels", "kernel_size", "padding", "activation", "precision"}


def _fit_section(raw, section, **defaults):
    """``[training]`` or ``[transfer]`` (``section``, a class): its FitOptions keys
    into a :class:`~xtl.nn.backends.loop.FitOptions` over ``defaults``, the rest its own."""
    own = set(section.names()) - {"fit"}
    table = _table(raw, section.section, _FIT_KEYS | own)
    given = {k: table[k] for k in _FIT_KEYS & set(table)}
    fit = _parse(FitOptions, {**defaults, **given}, section.section, names=set(given))
    return section(fit=fit, **{k: table[k] for k in own & set(table)})


def _sweep(raw, seed: int, transfer: TransferConfig, n_layers: int,
           target_names) -> SweepConfig:
    """``[sweep]``: its seeds, baselines and alpha with ``[transfer]``'s fit as the
    sweep's :class:`~xtl.nn.sweep.SweepOptions`; a count of seeds starts at ``seed``."""
    from ..nn.spec import check_layers

    table = _table(raw, "sweep", {"enabled", "layers", "seeds", "baselines", "alpha", "pairs"})
    given = {k: table[k] for k in ("seeds", "baselines", "alpha") if k in table}
    options = _parse(SweepOptions, {**given, "fit": transfer.fit, "renormalize":
                                    transfer.renormalize, "validation": transfer.validation},
                     "sweep", names=set(given))
    if not isinstance(table.get("seeds", 1), (list, tuple)):
        options = options.replace(seeds=[seed + s for s in options.seeds])
    layers = table.get("layers")
    if layers is not None:
        layers = _parse(check_layers, {"layers": layers, "n_layers": n_layers}, "sweep",
                        names={"layers"})
    sweep = SweepConfig(enabled=table.get("enabled", True), layers=layers, options=options,
                        pairs=table.get("pairs", False))
    named = sweep.pairs if isinstance(sweep.pairs, tuple) else ()
    unknown = [t for t in named if t not in target_names]
    if unknown:
        _fail("sweep.pairs", f"must name targets, among {list(target_names)}; got {unknown}")
    return sweep


def _network(raw):
    """``[network]`` as written and its :class:`~xtl.nn.spec.NetworkSpec`."""
    from ..nn.spec import NetworkSpec

    table = _table(raw, "network", _NETWORK_KEYS)  # NetworkSpec's messages name spec.<key>
    return table, _parse(NetworkSpec.from_any, {"spec": table}, "network", _NETWORK_KEYS,
                         prefix="spec.")


def _les(raw) -> LesConfig:
    """``[les]``: its times into the default :class:`~xtl.solver.les.LesSchedule`."""
    times = set(LesSchedule.names())
    table = _table(raw, "les", times | set(LesConfig.names()) - {"schedule"})
    given = {k: table.pop(k) for k in times & set(table)}
    return LesConfig(schedule=_parse(LesConfig.schedule.replace, given, "les"), **table)


def _budget(raw, target_names) -> BudgetConfig:
    table = _table(raw, "budget", {"enabled", "target", "fractions"})
    if not table.get("enabled", bool(table)):
        return BudgetConfig()
    target = table.get("target", target_names[0])
    budget = BudgetConfig(enabled=True, target=target, fractions=table.get("fractions"))
    if target not in target_names:
        _fail("budget.target", f"must name a target, one of {target_names}; got {target!r}")
    return budget


def _recommend(raw) -> RecommendConfig:
    from ..explain.recommend import available_recommenders

    methods = set(available_recommenders())
    table = _table(raw, "recommend", {"methods", "default"} | methods)
    return RecommendConfig(methods=table.get("methods"), default=table.get("default"),
                           options={m: table[m] for m in methods & set(table)})


def _benchmark(raw) -> BenchmarkConfig:
    table = _table(raw, "benchmark", {"enabled", "methods", "history", "strength"})
    if not table.get("enabled", bool(table)):
        return BenchmarkConfig()
    return BenchmarkConfig(enabled=True, **{k: table[k] for k in table if k != "enabled"})


def _flows(raw, folder=None) -> tuple:
    """(base, targets) of ``raw``, their names unique (relative ``path`` s against ``folder``)."""
    if "base" not in raw:
        _fail("base", "is missing (the base flow)")
    targets = raw.get("targets")
    if not targets:
        _fail("targets", "is missing: give at least one [[targets]] table")
    if not isinstance(targets, list):
        _fail("targets", "must be an array of tables ([[targets]])")
    flows = [_flow(t, f"targets[{i}]", folder) for i, t in enumerate(targets)]
    base = _flow(raw["base"], "base", folder)
    names = [base.name] + [f.name for f in flows]
    if len(set(names)) != len(names):
        _fail("targets", f"flow names (base and targets) must be unique, got {names}: give a "
                         "target that reuses a preset its own `name`")
    return base, tuple(flows)


def _resolved_source(raw: dict, base, targets) -> dict:
    """``raw`` (a copy) with the ``path`` of each flow read from files made absolute, so
    that ``config.json`` reopens the same files from anywhere."""
    source = copy.deepcopy(raw)
    tables = [("base", source["base"])] + list(enumerate(source["targets"]))
    for (_, table), flow in zip(tables, (base, *targets)):
        if isinstance(flow, FileFlowConfig):
            table["path"] = flow.path
    return source


def parse_config(raw: dict, folder=None) -> ExperimentConfig:
    """Validate a configuration mapping (as read from TOML) into an :class:`ExperimentConfig`.

    ``raw`` holds the TOML tables (see the module docstring); a relative ``path`` of a
    flow read from files is resolved against ``folder`` (default the working folder).

    Raises
    ------
    ConfigError
        Naming the first bad key.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a table, got {type(raw).__name__}")
    _check_keys(raw, _SECTIONS, "")
    experiment = _table(raw, "experiment", {"name", "seed", "min_decades"})
    base, targets = _flows(raw, folder)
    own = _parse(_experiment_values, experiment, "experiment")
    network, spec = _network(raw)
    transfer = _fit_section(raw, TransferConfig)
    config = ExperimentConfig(
        name=str(experiment.get("name", "experiment")), seed=own["seed"], base=base,
        targets=targets, network=network,
        training=_fit_section(raw, TrainingConfig, seed=own["seed"]), transfer=transfer,
        sweep=_sweep(raw, own["seed"], transfer, spec.n_layers, [f.name for f in targets]),
        les=_les(raw),
        min_decades=own["min_decades"], budget=_budget(raw, [f.name for f in targets]),
        recommend=_recommend(raw), benchmark=_benchmark(raw), data=_data(raw),
        source=_resolved_source(raw, base, targets),
    )
    _check_data_sizes(config)
    _check_les_runs(config)
    return config


def _experiment_values(name="experiment", seed=0, min_decades=0.3) -> dict:
    """``[experiment]``'s seed (an int >= 0) and ``min_decades`` (>= 0)."""
    return {"seed": check_int(seed, "seed", minimum=0),
            "min_decades": check_float(min_decades, "min_decades", minimum=0.0)}


#: Bytes a flow's data may take where the machine's memory is unknown (see
#: :func:`flow_bytes`).
FLOW_BYTES_BOUND = 256 * 1024**3


def flow_bytes(flow: FlowConfig, n_variables: int) -> tuple:
    """``(LES data, DNS of one member)`` in bytes of a simulated flow.

    The LES data are ``members × snapshots × n_les² × n_variables`` float32 values
    (what the training reads into memory); a member's DNS is the solver's state on
    the case's ``n²`` grid (:func:`xtl.physics.fourier.state_bytes`).
    """
    from ..physics.fourier import state_bytes

    case = flow.make_case()
    les = flow.members * n_snapshots(flow) * case.n_les ** 2 * n_variables * 4
    return les, state_bytes(case.n)


def _check_data_sizes(config: ExperimentConfig) -> None:
    """Refuse a simulated flow whose data cannot fit: its LES data and one member's DNS
    above this machine's memory (or :data:`FLOW_BYTES_BOUND` where it is unknown)."""
    from ..physics.fourier import format_bytes, machine_memory

    total = machine_memory()
    limit, what = ((total, "this machine has") if total is not None else
                   (FLOW_BYTES_BOUND, "the bound where the memory is unknown is"))
    wheres = ["base"] + [f"targets[{i}]" for i in range(len(config.targets))]
    for where, flow in zip(wheres, config.flows):
        if isinstance(flow, FileFlowConfig):
            continue
        les, dns = flow_bytes(flow, len(config.data.variable_names))
        if les + dns > limit:
            case = flow.make_case()
            _fail(f"{where}.members",
                  f"flow {flow.name!r} would hold ≈ {format_bytes(les + dns)} "
                  f"({flow.members} member(s) × {n_snapshots(flow)} snapshots × "
                  f"{case.n_les}² × {len(config.data.variable_names)} variables × 4 bytes of "
                  f"LES data, {format_bytes(les)}, and {format_bytes(dns)} of DNS per "
                  f"member); {what} {format_bytes(limit)}: use fewer members or snapshots "
                  f"(save_interval, t_end) or a smaller n_les")


def _check_les_runs(config: ExperimentConfig) -> None:
    """The a posteriori runs of every target: ``les.save_interval`` a whole number of
    its LES time steps, and ``les.initial_states`` no more than its test samples.
    Targets read from files have no case: the stage skips them."""
    les = config.les
    if not les.enabled:
        return
    from ..solver.les import les_case

    schedule = les.schedule
    for target in config.targets:
        if isinstance(target, FileFlowConfig):
            continue
        dt = les_case(target.make_case(), dt=schedule.dt).dt
        step = (f"the LES time step les.dt = {dt:g}" if schedule.dt is not None else
                f"the LES time step {dt:g} of target {target.name!r} (its DNS dt · n / n_les; "
                f"les.dt sets another)")
        _check_multiple(schedule.save_interval, dt, "les.save_interval", step)
        n_test = split_sizes(n_snapshots(target))[1]
        held_out = target.members * n_test
        if les.initial_states > held_out:
            _fail("les.initial_states", f"{les.initial_states} initial states asked for, but "
                                        f"target {target.name!r} holds {held_out} held-out "
                                        f"samples ({target.members} member(s) x {n_test} test "
                                        f"time(s), the last {TEST_FRACTION:.0%} of its "
                                        f"snapshots): ask for at most {held_out}, or give the "
                                        f"target more members or a longer t_end")


def load_config(source=None) -> ExperimentConfig:
    """Read and validate an experiment config.

    Parameters
    ----------
    source : path, dict or None
        A TOML file (UTF-8, with or without a byte-order mark), an already-parsed
        mapping, or None for :data:`DEMO_CONFIG`. The relative ``path`` of a flow read
        from files is resolved against the TOML file's folder (a mapping's: against the
        working folder).

    Raises
    ------
    ConfigError
        A missing file, one that is not UTF-8 or not TOML (naming the file), or a bad
        key (naming it, see :func:`parse_config`).
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
        # utf-8-sig: a byte-order mark (as some editors save) is not part of the TOML
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte "
                          f"{err.object[err.start]:#04x} at offset {err.start}): save it as "
                          "UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    return parse_config(raw, folder=path.parent)
