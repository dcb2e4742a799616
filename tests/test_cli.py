"""`paddy --help` and every command's `--help` answer at once: building the parser imports no heavy package."""

import json
import subprocess
import sys

import pytest

from paddy import commands as cli

HEAVY = ("torch", "timm", "pandas", "numpy", "dvc", "dvclive", "kaggle", "matplotlib", "sklearn")

# Parse `argv` (help exits) and list which heavy packages are imported by then, in a fresh interpreter.
PROBE = """
import json, sys
from paddy import commands as cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.stdin.read())))))
"""


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in cli.COMMANDS])
def test_help_imports_no_heavy_package(argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], input=json.dumps(HEAVY), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "usage: paddy" in out.stdout
    assert json.loads(out.stdout.splitlines()[-1]) == [], f"`paddy {' '.join(argv)}` imported them"


def test_every_command_parses_and_has_its_help_arguments_and_run():
    parser = cli.build_parser()
    args = parser.parse_args(["compare", "--sort", "oof_acc.ensemble", "--asc"])
    assert args.sort == "oof_acc.ensemble" and args.asc and args.ledger == cli.LEDGER
    assert parser.parse_args(["profile", "--estimate", "--arch", "test_vit", "--batch", "8", "4"]).batch == [8, 4]
    assert parser.parse_args(["lr-find", "vit", "-S", "train.lr=0.1"]).overrides == ["train.lr=0.1"]
    for name, command in cli.COMMANDS.items():
        assert callable(command.run) and callable(command.arguments) and command.HELP, name


def test_ledger_default_is_the_ledgers():
    from paddy.leaderboard import ledger

    assert cli.LEDGER == str(ledger.LEDGER)
