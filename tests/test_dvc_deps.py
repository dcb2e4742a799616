"""Every stage's dependencies are complete by construction: dvc.yaml lists each `paddy` module its script imports.

The test finds the script each stage's `cmd` runs (stages/*.py, foreach stages resolved by DVC itself), walks its
imports statically with `ast` (top-level and function-level `import paddy.x`, `from paddy.x import y`,
`from paddy import x`), transitively through src/paddy, and compares the module files reached with the stage's
deps, both ways: a module missing from the deps leaves results stale after an edit to it; a module listed but not
imported reruns the stage for nothing. A dep on the whole src/paddy folder would also be complete, but it reruns
every stage, training included, on any library edit: it is refused too.

After adding or moving an import, run this test: its message lists, stage by stage, the lines to add to or remove
from dvc.yaml.
"""

import ast
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def imported_names(path):
    """Dotted names of every `paddy` import in the file, at any depth (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise ValueError(f"{path}:{node.lineno} uses a relative import; paddy imports are absolute")
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from paddy import x`: a module
    return {name for name in names if name.split(".")[0] == "paddy"}


def module_file(name, src=SRC):
    """The file that defines module `name`, or None when `name` is a function or class imported from a module."""
    base = Path(src).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def stage_modules(script, src=SRC):
    """Files under `src`/paddy that running `script` imports, directly or through other paddy modules."""
    seen, todo = set(), [Path(script)]
    while todo:
        for name in imported_names(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # `import paddy.x` runs paddy/__init__.py first
                path = module_file(".".join(parts[:i]), src)
                if path is not None and path not in seen:
                    seen.add(path)
                    todo.append(path)
    return seen


@pytest.fixture(scope="module")
def stages():
    """(name, script, file deps) for every stage of dvc.yaml, `foreach` ones resolved (train@resnet, ...)."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = list(repo.index.stages)
    rows = []
    for stage in stages:
        scripts = [t for t in shlex.split(stage.cmd) if t.startswith("stages/") and t.endswith(".py")]
        assert len(scripts) == 1, f"{stage.addressing}: cmd runs {scripts or 'no stages/*.py script'}"
        deps = {d.def_path for d in stage.deps if not hasattr(d, "params")}  # params deps are not files
        rows.append((stage.addressing, scripts[0], deps))
    return rows


def _rel(path):
    return Path(path).relative_to(ROOT).as_posix()


def test_every_stage_lists_exactly_the_paddy_modules_it_imports(stages):
    problems = []
    for name, script, deps in stages:
        listed = {d for d in deps if d.startswith("src/")}
        needed = {_rel(p) for p in stage_modules(ROOT / script)}
        if script not in deps:
            problems.append(f"{name}: add its own script {script}")
        if {"src", "src/paddy"} & listed:
            problems.append(f"{name}: replace the whole-folder dep on src/paddy by the modules it imports")
        if needed - listed:
            problems.append(f"{name}: add {', '.join(sorted(needed - listed))} (imported)")
        if listed - needed - {"src", "src/paddy"}:
            problems.append(f"{name}: remove {', '.join(sorted(listed - needed))} (not imported)")
    assert not problems, "dvc.yaml deps do not match the imports:\n" + "\n".join(problems)


@pytest.fixture
def package(tmp_path):
    """A tiny `paddy` package: a stage imports a, a imports b inside a function, b imports c via `from paddy`."""
    pkg = tmp_path / "src" / "paddy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from paddy.errors import E\n")
    (pkg / "errors.py").write_text("class E(Exception): ...\n")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    from paddy.b import g\n    return g()\n")
    (pkg / "b.py").write_text("from paddy import c\n\ndef g():\n    return c.h()\n")
    (pkg / "c.py").write_text("def h():\n    return 1\n")
    (pkg / "unused.py").write_text("")
    script = tmp_path / "stage.py"
    script.write_text("import numpy\nimport paddy.a\n")
    return tmp_path, script


def test_the_walk_follows_function_level_and_package_imports(package):
    root, script = package
    found = {p.name for p in stage_modules(script, root / "src")}
    assert found == {"__init__.py", "errors.py", "a.py", "b.py", "c.py"}


def test_relative_imports_are_refused(package):
    root, script = package
    (root / "src" / "paddy" / "c.py").write_text("from . import errors\n")
    with pytest.raises(ValueError, match="relative import"):
        stage_modules(script, root / "src")


def test_every_stage_runs_after_the_params_check(stages):
    """DVC deletes a stage's outputs before running it: a bad setting must fail in `check`, before any of that."""
    late = [name for name, _, deps in stages if name != "check" and "data/checked" not in deps]
    assert not late, f"add data/checked to the deps of {', '.join(late)}"


def test_no_file_dep_is_empty(stages):
    """DVC prints `WARNING: '<path>' is empty.` on every repro for each empty file a stage depends on."""
    empty = sorted({d for _, _, deps in stages for d in deps if (ROOT / d).is_file() and not (ROOT / d).stat().st_size})
    assert not empty, f"give each a one-line docstring, or DVC warns on every repro that it is empty: {empty}"
