"""What tests share besides fixtures (those are conftest.py's), a module per concern, imported by name
(`from helpers.pipeline import sh`; pyproject's pytest `pythonpath` puts tests/ on sys.path):

- pipeline: the repository (ROOT) and the ways to run it: a shell command, a stage script, a shrunk copy of the
  pipeline, a copy of a finished run.
- settings: params.yaml shrunk for tests, the default competition, and settings_with for a setting changed by its
  dotted key.
- data: a work folder prepared from the shared tiny competition.
- processes: whether a stage has reached its main(), and killing a whole session of processes.
- kaggle: FakeKaggle and FakeKernels, which stand in for the Kaggle client.
- training: CaptureGradients, which stands in for the optimizer."""
