"""Tests of xtl/accessors.py: the `.tl` accessors are generated from the functions of
xtl.data.spectra, xtl.explain.kernels and xtl.data.coarse (same signature less the first
parameter, same docs, same results)."""
import ast
import inspect
import pydoc
import re

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

import xtl.accessors  # noqa: F401  (registers .tl)
from xtl.data import coarse as C
from xtl.data import spectra as S
from xtl.explain import kernels as K

TWO_PI = 2 * np.pi


def flow():
    rng = np.random.default_rng(0)
    n = 16
    coords = {"member": [0, 1], "time": [0.0, 1.0, 2.0], "y": np.arange(n) * TWO_PI / n,
              "x": np.arange(n) * TWO_PI / n}
    dims = ("member", "time", "y", "x")
    psi = rng.standard_normal((2, 3, n, n))
    return xr.Dataset(
        {"psi": (dims, psi), "omega": (dims, 3 * psi), "pi": (dims, rng.standard_normal(psi.shape))},
        coords=coords,
    ).chunk({"time": 1})


def models():
    rng = np.random.default_rng(1)
    shape = (2, 3, 2, 5, 5)

    def make(w):
        return xr.Dataset(
            {"kernel": (K.KERNEL_DIMS, w.astype(np.float32))}, coords={"layer": [1, 2]}
        )

    w = rng.standard_normal(shape)
    return make(w), make(w + 0.1 * rng.standard_normal(shape))


def test_accessor_is_registered_on_dataset_and_dataarray():
    ds = flow()
    assert isinstance(ds.tl, xtl.accessors.TLDatasetAccessor)
    assert isinstance(ds.psi.tl, xtl.accessors.TLDataArrayAccessor)


def test_dataset_spectra_match_functions():
    ds = flow()
    E = ds.tl.spectrum("energy")
    assert isinstance(E.data, dsa.Array) and E.dims == ("member", "time", "k")
    xr.testing.assert_allclose(E.compute(), S.spectrum(ds.psi, "energy").compute())
    xr.testing.assert_allclose(
        ds.tl.spectrum("enstrophy").compute(), S.spectrum(ds.omega, "enstrophy").compute()
    )
    P = ds.tl.spectrum()
    assert set(P.data_vars) == {"psi", "omega", "pi"}
    xr.testing.assert_allclose(ds.tl.spectrum(var="pi").compute(), P.pi.compute())
    xr.testing.assert_allclose(
        ds.tl.transfer_spectrum(kind="energy").compute(),
        S.transfer_spectrum(ds.psi, ds.pi, kind="energy").compute(),
    )
    TZ = ds.tl.transfer_spectrum(kind="enstrophy")
    np.testing.assert_allclose(
        TZ.sum("k").values, (ds.omega * ds.pi).mean(["y", "x"]).values, rtol=1e-12
    )


def test_dataarray_spectra_match_functions():
    ds = flow()
    P = ds.pi.tl.spectrum()
    np.testing.assert_allclose(P.sum("k").values, (ds.pi**2).mean(["y", "x"]).values, rtol=1e-12)
    xr.testing.assert_allclose(
        ds.psi.tl.transfer_spectrum(ds.pi, kind="energy").compute(),
        S.transfer_spectrum(ds.psi, ds.pi, kind="energy").compute(),
    )
    with pytest.raises(ValueError, match="'y' and 'x'"):
        ds.psi.isel(x=0).tl.spectrum()


def test_model_accessors_match_functions():
    base, tl = models()
    F = base.tl.kernel_filters(pad_to=16)
    xr.testing.assert_allclose(F.compute(), K.kernel_filters(base, 16).compute())
    prof = F.tl.radial_profile()
    xr.testing.assert_allclose(prof.compute(), K.radial_profile(F).compute())
    c = base.tl.classify_kernels(pad_to=16)
    xr.testing.assert_identical(c, K.classify_kernels(base, 16))
    xr.testing.assert_allclose(F.tl.classify_filters(), c, rtol=1e-4)  # full grid vs rfft2
    census = base.tl.filter_census(pad_to=16)
    xr.testing.assert_identical(census, K.filter_census(base, pad_to=16))
    xr.testing.assert_identical(c.tl.filter_census(), census)
    xr.testing.assert_identical(c.filter_type.tl.filter_census(), census)
    assert int(census.sum()) == 2 * 3 * 2
    change = base.tl.kernel_change(tl, pad_to=16, percentile=90)
    xr.testing.assert_identical(change, K.kernel_change(base, tl, pad_to=16, percentile=90))
    with pytest.raises(ValueError, match="'kernel'"):
        base.drop_vars("kernel").tl.kernel_filters(pad_to=16)


# --------------------------------------------------------------------------- generated methods
DATASET_METHODS = {"spectrum": S.spectrum, "transfer_spectrum": S.transfer_spectrum,
                   "filter_census": K.filter_census, "coarse_grain": C.coarse_grain,
                   "kernel_filters": K.kernel_filters, "classify_kernels": K.classify_kernels,
                   "kernel_change": K.kernel_change}
DATAARRAY_METHODS = {"spectrum": S.spectrum, "transfer_spectrum": S.transfer_spectrum,
                     "filter_census": K.filter_census, "radial_profile": K.radial_profile,
                     "classify_filters": K.classify_filters}
METHODS = [(xtl.accessors.TLDatasetAccessor, name, func) for name, func in DATASET_METHODS.items()]
METHODS += [(xtl.accessors.TLDataArrayAccessor, name, func)
            for name, func in DATAARRAY_METHODS.items()]
SHARED = set(DATASET_METHODS) & set(DATAARRAY_METHODS)


def _ids(cases):
    return [f"{cls.__name__}.{name}" for cls, name, _ in cases]


def test_module_docstring_lists_the_methods_of_each_accessor():
    doc = " ".join(xtl.accessors.__doc__.split())
    bullets = dict(re.findall(r"\* (``ds\.tl`` and ``da\.tl``|``ds\.tl`` only|``da\.tl`` only): "
                              r"([^;.]+)[;.]", doc))
    listed = {key: {name.strip(" `") for name in names.split(",")}
              for key, names in bullets.items()}
    assert listed == {"``ds.tl`` and ``da.tl``": SHARED,
                      "``ds.tl`` only": set(DATASET_METHODS) - SHARED,
                      "``da.tl`` only": set(DATAARRAY_METHODS) - SHARED}


def _public_methods(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


def test_each_accessor_has_exactly_its_methods():
    assert _public_methods(xtl.accessors.TLDatasetAccessor) == set(DATASET_METHODS)
    assert _public_methods(xtl.accessors.TLDataArrayAccessor) == set(DATAARRAY_METHODS)
    assert _public_methods(xr.Dataset.tl) == set(DATASET_METHODS)
    assert _public_methods(xr.DataArray.tl) == set(DATAARRAY_METHODS)


@pytest.mark.parametrize("cls, name, func", METHODS, ids=_ids(METHODS))
def test_signature_is_the_functions_less_its_first_parameter(cls, name, func):
    params = list(inspect.signature(func).parameters.values())
    bound = getattr(flow() if cls is xtl.accessors.TLDatasetAccessor else flow().psi, "tl")
    expected = inspect.signature(func).replace(parameters=params[1:])
    assert inspect.signature(getattr(bound, name)) == expected
    method = getattr(cls, name)
    unbound = list(inspect.signature(method).parameters.values())
    assert unbound[0].name == "self" and unbound[1:] == params[1:]
    assert method.__wrapped__ is func and method.__name__ == func.__name__
    owner = "_TLAccessor" if name in SHARED else cls.__name__
    assert method.__qualname__ == f"{owner}.{name}"
    assert method.__module__ == "xtl.accessors"


def _sections(doc):
    """A numpydoc docstring as {header: lines}; the lines before the first header under ""."""
    lines, out, header, start = doc.splitlines(), {}, "", 0
    for i in range(1, len(lines)):
        if lines[i] and set(lines[i]) == {"-"} and lines[i - 1].strip():
            out[header] = lines[start:i - 1]
            header, start = lines[i - 1], i + 1
    out[header] = lines[start:]
    return {key: "\n".join(value).strip("\n") for key, value in out.items()}


def _entries(section):
    """The Parameters entries of a section as [(names, description lines)]."""
    entries = []
    for line in section.splitlines():
        if line and not line.startswith(" "):
            names = line.partition(" :")[0]
            entries.append(([n.strip().lstrip("*") for n in names.split(",")], []))
        elif entries:
            entries[-1][1].append(line)
    return entries


@pytest.mark.parametrize("cls, name, func", METHODS, ids=_ids(METHODS))
def test_docstring_is_the_functions_less_its_first_parameter(cls, name, func):
    first, *rest = inspect.signature(func).parameters
    doc, ref = _sections(getattr(cls, name).__doc__), _sections(inspect.getdoc(func))
    assert doc.keys() == ref.keys() and "Parameters" in doc
    for header in doc.keys() - {"", "Parameters"}:  # Returns, Raises, Examples, ...
        assert doc[header] == ref[header], header
    summary, _, extended = ref[""].partition("\n\n")
    note = (f"Accessor form of :func:`{func.__module__}.{func.__name__}`: ``{first}`` is the "
            "object ``.tl`` is on.")
    head, _, tail = doc[""].partition("\n\n")
    assert head == summary
    assert " ".join(tail.split()).startswith(note)
    assert tail.replace("\n", " ").replace(note, "", 1).strip() == " ".join(
        extended.split("\n")).strip()
    # each entry is the function's, less the first parameter, and they cover the signature
    entries, ref_entries = _entries(doc["Parameters"]), _entries(ref["Parameters"])
    assert [n for names, _ in entries for n in names] == rest
    assert entries == [([n for n in names if n != first], text) for names, text in ref_entries
                       if names != [first]]
    assert pydoc.render_doc(getattr(cls, name), renderer=pydoc.plaintext).count(summary) == 1


def test_api_reference_docstrings_name_the_wrapped_function():
    tree = ast.parse(inspect.getsource(xtl.accessors))
    found = {}
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        for stmt, nxt in zip(cls.body, cls.body[1:]):
            if isinstance(stmt, ast.Assign) and isinstance(nxt, ast.Expr):
                found[(cls.name, stmt.targets[0].id)] = nxt.value.value
    expected = {("_TLAccessor" if name in SHARED else cls.__name__, name): func
                for cls, name, func in METHODS}
    assert found.keys() == expected.keys()
    for key, func in expected.items():
        assert f":func:`{func.__module__}.{func.__name__}`" in found[key], key


def _cases():
    """(object, method, args, kwargs) for each of the nine methods, on small inputs."""
    ds, (base, tl) = flow(), models()
    filters = K.kernel_filters(base, 16)
    return [
        (ds, "spectrum", ("energy",), {}),
        (ds.pi, "spectrum", (), {"kmax": 5}),
        (ds, "transfer_spectrum", (), {"kind": "enstrophy"}),
        (ds.psi, "transfer_spectrum", (ds.pi,), {"kmax": 4}),
        (base, "filter_census", (), {"pad_to": 16, "edge": 0.2}),
        (K.classify_kernels(base, 16).filter_type, "filter_census", (), {}),
        (ds[["psi", "omega"]], "coarse_grain", (8, "box"), {"width": 0.5}),
        (base, "kernel_filters", (16,), {"shift": False}),
        (base, "classify_kernels", (16,), {"flat_ratio": 3.0, "kmax": 6}),
        (base, "kernel_change", (tl,), {"pad_to": 16, "percentile": 90, "by": "physical"}),
        (filters, "radial_profile", (), {"kmax": 5}),
        (filters, "classify_filters", (), {"min_anisotropy": 0.3}),
    ]


@pytest.mark.parametrize("case", range(len(_cases())))
def test_calling_through_the_accessor_is_calling_the_function(case):
    obj, name, args, kwargs = _cases()[case]
    func = DATASET_METHODS.get(name) or DATAARRAY_METHODS[name]
    for _ in range(3):  # a history time stamp (coarse_grain) may tick between the calls
        got, want = getattr(obj.tl, name)(*args, **kwargs), func(obj, *args, **kwargs)
        if got.attrs.get("history") == want.attrs.get("history"):
            break
    xr.testing.assert_identical(got, want)


def test_all_nine_functions_are_called_through_the_accessors():
    assert {name for _, name, _, _ in _cases()} == set(DATASET_METHODS) | set(DATAARRAY_METHODS)


# filter_census of a classification takes **criteria but ignores them (only a model is
# classified), so a wrong keyword raises nothing there, through the function or the accessor
KEYWORD_CASES = [i for i, (obj, name, _, _) in enumerate(_cases())
                 if not (name == "filter_census" and "kernel" not in getattr(obj, "data_vars", ()))]


@pytest.mark.parametrize("case", KEYWORD_CASES)
def test_a_wrong_keyword_raises_the_functions_type_error(case):
    obj, name, args, kwargs = _cases()[case]
    func = DATASET_METHODS.get(name) or DATAARRAY_METHODS[name]
    with pytest.raises(TypeError) as direct:
        func(obj, *args, wrong_keyword=1, **kwargs)
    with pytest.raises(TypeError) as through:
        getattr(obj.tl, name)(*args, wrong_keyword=1, **kwargs)
    assert str(through.value) == str(direct.value)
    assert "wrong_keyword" in str(through.value)


def _no_compute(*args, **kwargs):
    raise AssertionError("a dask graph was computed")


def test_lazy_methods_build_graphs_and_compute_nothing():
    ds, (base, _) = flow(), models()
    with dask.config.set(scheduler=_no_compute):
        filters = base.tl.kernel_filters(16)
        results = [ds.tl.spectrum("energy"), ds.pi.tl.spectrum(), ds.tl.spectrum(),
                   ds.tl.transfer_spectrum(), ds.psi.tl.transfer_spectrum(ds.pi),
                   ds[["psi", "omega"]].tl.coarse_grain(8), filters,
                   filters.tl.radial_profile()]
    for result in results:
        arrays = result.data_vars.values() if isinstance(result, xr.Dataset) else [result]
        assert all(isinstance(a.data, dsa.Array) for a in arrays)
