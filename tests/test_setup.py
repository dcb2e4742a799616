"""The README's set-up lines, .ci/run and constraints.txt say the same thing: CI runs the README's test line, and
every dependency is pinned to a version pyproject.toml allows."""

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def pins():
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_ci_runs_the_readmes_test_line_through_the_constraints():
    readme = (ROOT / "README.md").read_text()
    test_line = next(line for line in readme.splitlines() if line.startswith("pip install") and "pytest" in line)
    install, pytest_command = test_line.split(" && ")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and pytest_command in ci, (test_line, ci)
    assert "-c constraints.txt" in install
    main_line = next(line for line in readme.splitlines() if line.startswith("pip install") and "dvc repro" in line)
    assert "-c constraints.txt" in main_line


def test_every_dependency_is_pinned_within_pyprojects_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {re.sub(r"[-_.]+", "-", name.lower()): version for name, version in pins().items()}
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", requirement.name.lower())
        assert name in pinned, f"{name} is not pinned in constraints.txt: run `bash .ci/lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (spec, pinned[name])
