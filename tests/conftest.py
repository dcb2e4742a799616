"""Fixtures and session set-up only: tests shrink the real config and data rather than mock them, tiny timm models on
tiny generated images. The helpers tests share (a Kaggle client that stands in for the real one, an optimizer that
captures gradients, the ways to run a script or a shell command and a shrunk copy of the pipeline) are the helpers
package's (tests/helpers), imported by name: `from helpers.pipeline import sh`."""

import signal
from dataclasses import replace

import pytest
import torch
from helpers.pipeline import copy_pipeline, sh
from helpers.settings import shrunk_params

from paddy.data.synthetic import make_competition
from paddy.settings import parse_settings

# The tests stop stages with SIGINT as a terminal's Ctrl-C does. A runner that starts pytest as a background job of a
# shell without job control (`bash -c '... &'`) has SIGINT ignored, and every stage the tests start would inherit
# that and run on: give this process Python's own handler, which a child's exec turns back into the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

torch.set_num_threads(2)


@pytest.fixture
def params():
    """shrunk_params(), for one test to change."""
    return shrunk_params()


@pytest.fixture
def source_settings(params):
    """source_settings(path): the shrunk params' DataSettings with data.source set to `path`."""
    return lambda source: replace(parse_settings(params).data, source=str(source))


@pytest.fixture(autouse=True, scope="session")
def item_cache(tmp_path_factory):
    """Item arrays go to a folder of the test session, never the user's ~/.cache/paddy."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PADDY_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """copy_pipeline's repository after one `dvc repro` (the commit before it, the run's outputs and DVC's cache
    after), built once a session: the slow tests that start from a finished run take a copy (copy_finished_run)
    instead of reproducing the same run again (50 s each on 2 cores)."""
    repo = tmp_path_factory.mktemp("finished")
    copy_pipeline(repo)
    sh("dvc repro", repo)
    return repo


@pytest.fixture(scope="session")
def competition(tmp_path_factory):
    """A tiny competition folder and its test truth file (shared: tests must not modify it)."""
    root = tmp_path_factory.mktemp("comp")
    make_competition(root / "raw", root / "truth.csv", n_train=60, n_test=12, width=48, height=64, seed=1)
    return root / "raw", root / "truth.csv"
