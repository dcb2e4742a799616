"""The shape the README promises: stage scripts that parse paths and call the library, short enough to read at a
glance, and no function in the library with a long list of loose values (a run, a section of the settings or a
small dataclass travels whole instead)."""

import ast

import pytest
from helpers.pipeline import ROOT

MAX_PARAMETERS = 8
MAX_STAGE_LINES = 50


def parameters(node):
    args = node.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, [args.vararg, args.kwarg])]
    return [a.arg for a in names if a.arg not in ("self", "cls")]


def test_no_library_function_takes_more_than_8_parameters():
    long = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(parameters(node)) > MAX_PARAMETERS:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({len(parameters(node))})")
    assert not long, (
        f"functions over {MAX_PARAMETERS} parameters (pass a run, a settings section or a dataclass): {long}"
    )


@pytest.mark.parametrize("stage", sorted(p.name for p in (ROOT / "stages").glob("*.py")))
def test_each_stage_script_is_short(stage):
    lines = len((ROOT / "stages" / stage).read_text().splitlines())
    assert lines < MAX_STAGE_LINES, f"stages/{stage} has {lines} lines: move its work into src/paddy"
