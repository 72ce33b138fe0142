"""The documentation and the project's metadata: the API reference builds (offline, strict),
documents every public name, and nothing cites documents a reader does not have."""
import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import xtl

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _text_files():
    """The repository's own text files (code, docs, configs), not generated ones."""
    skip = {".git", ".venv", "site", "build", "dist", "__pycache__", ".pytest_cache"}
    suffixes = {".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".txt", ""}
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if path.is_file() and not (set(rel.parts) & skip) and not rel.parts[0].endswith(
                ".egg-info") and path.suffix in suffixes and not path.is_symlink():
            yield rel, path.read_text(errors="replace")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                          str(ROOT / "mkdocs.yml"), "-d", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-4000:]
    return out


def test_api_reference_documents_every_public_name(site):
    html = "".join(p.read_text() for p in (site / "reference").rglob("*.html"))
    anchors = set(re.findall(r'id="(xtl\.[\w.]+)"', html))
    missing = [f"{getattr(xtl, n).__module__}.{n}" for n in xtl.__all__
               if f"{getattr(xtl, n).__module__}.{n}" not in anchors]
    assert not missing, missing
    assert len(xtl.__all__) > 40


def test_api_reference_renders_the_numpydoc_sections(site):
    page = (site / "reference" / "ensemble" / "index.html").read_text()
    assert 'id="xtl.solver.ensemble.open_ensemble"' in page
    for text in ("Parameters:", "Returns:", "Raises:", "chunks"):
        assert text in page, text


def test_the_guides_and_the_changelog_are_in_the_site(site):
    for page in ("installing", "conventions", "training-data", "tutorial", "changelog"):
        assert (site / page / "index.html").exists(), page


def test_installing_page_covers_pip_the_extras_and_gpus():
    text = (ROOT / "docs" / "installing.md").read_text()
    assert "pip install ." in text and "Python ≥ 3.11" in text
    extras = PROJECT["optional-dependencies"]
    assert set(extras) == {"gpu", "docs", "qg", "torch", "test"}
    assert "xtl[torch]" in extras["test"]  # the torch backend's tests run in CI
    assert any(req.startswith("tensorflow[and-cuda]") for req in extras["gpu"])
    for name in extras:
        assert f"`{name}`" in text, name


def test_one_python_version_everywhere():
    minimum = re.fullmatch(r">=(3\.\d+)", PROJECT["requires-python"]).group(1)
    assert tuple(map(int, minimum.split("."))) >= (3, 11)
    found = []
    for rel, text in _text_files():
        found += [(rel, v) for v in re.findall(r"Python\s*(?:≥|>=)\s*(3\.\d+)", text)]
    assert found and all(v == minimum for _, v in found), found


def test_version_is_single_sourced():
    assert xtl.__version__ == importlib.metadata.version("xtl") == PROJECT["version"]
    for path in (ROOT / "xtl").rglob("*.py"):
        if path.name == "_version.py":
            continue
        text = path.read_text()
        assert not re.search(r"__version__\s*=", text), path  # no second definition
        assert not re.search(r"from (\.|xtl) import __version__", text), path  # not the facade


def test_license_file_matches_the_declared_license():
    assert PROJECT["license"] == "MIT" and "LICENSE" in PROJECT["license-files"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_changelog_has_an_entry_for_the_unreleased_work():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and f"## [{PROJECT['version']}]" in text


def test_nothing_cites_documents_a_reader_does_not_have():
    banned = ["DESIGN" + ".md", "issue " + "note"]
    hits = [(str(rel), b) for rel, text in _text_files() for b in banned if b.lower() in text.lower()]
    assert not hits, hits


# --------------------------------------------------------------------------- runnable snippets
#: Calls a script may make at import: building constants.
_HARMLESS = ("np.", "numpy.", "textwrap.", "re.compile", "Path", "dict", "range", "tuple",
             "list", "set", "frozenset")


def _runs_code(statement) -> bool:
    """Whether a module-level statement does work when imported (not an import/def/guard)."""
    if isinstance(statement, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
        return False
    if isinstance(statement, ast.If):
        test = ast.unparse(statement.test).replace("'", '"')
        return test != '__name__ == "__main__"'
    if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.Expr)):
        calls = [n for n in ast.walk(statement) if isinstance(n, ast.Call)]
        return any(not ast.unparse(c.func).startswith(_HARMLESS) for c in calls)
    return True


def _python_blocks(markdown: str):
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run_their_work_under_a_main_guard(path):
    """A script that starts dask worker processes must not run anything on import."""
    tree = ast.parse(path.read_text())
    offending = [ast.unparse(s).splitlines()[0] for s in tree.body if _runs_code(s)]
    assert not offending, offending
    assert any(isinstance(s, ast.If) and "__main__" in ast.unparse(s.test) for s in tree.body)


def test_readme_snippet_has_a_main_guard():
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        assert not [ast.unparse(s) for s in tree.body if _runs_code(s)], block


def test_the_guard_check_catches_an_unguarded_script():
    tree = ast.parse("import xtl\nds = xtl.ensemble('tiny', t_end=1, save_interval=1, directory='r')\n")
    assert [s for s in tree.body if _runs_code(s)]


def test_the_extending_examples_run(tmp_path):
    """The ```python blocks of docs/extending.md, in order, in a fresh process (they
    register a filter, a forcing, a closure and a recommender)."""
    text = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    script = tmp_path / "extending.py"
    script.write_text("\n".join(blocks))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "0.5 * Smagorinsky(cs=0.17) + LinearDrag(r=0.05)" in run.stdout
