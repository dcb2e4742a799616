"""`paddy kaggle run|status|pull`: the pipeline on Kaggle's GPUs, its state, its results as a DVC experiment."""

HELP = "train on Kaggle's GPUs: run the pipeline as a kernel, follow it, pull it back as a DVC experiment"


def arguments(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="bundle the committed project and push it as a Kaggle kernel that runs it")
    run.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="change a setting, as `dvc exp run -S` does (repeatable)")  # fmt: skip
    run.add_argument("--params", default="params.yaml", help="committed params file or preset (default: %(default)s)")
    run.add_argument("--accelerator", choices=["t4x2", "p100"], help="Kaggle's GPUs (default: kaggle.accelerator)")
    run.add_argument("--name", help="the kernel's slug (default: kaggle.kernel in the params)")
    run.add_argument("--resume", metavar="NAME", help="push a new version of kernel NAME that continues its last one")
    run.add_argument("--dry-run", action="store_true", help="build and check the bundle, send nothing")
    run.add_argument("--out", help="with --dry-run: write the bundle to this folder")
    status = sub.add_parser("status", help="a kernel's state; the end of its log when it failed")
    status.add_argument("name", nargs="?", help="the kernel's slug (default: kaggle.kernel in params.yaml)")
    status.add_argument("--version", type=int, help="a version pushed from here (default: the latest)")
    pull = sub.add_parser("pull", help="fetch a finished kernel's output, verify it, save it as a DVC experiment")
    pull.add_argument("name", nargs="?", help="the kernel's slug (default: kaggle.kernel in params.yaml)")
    pull.add_argument("--version", type=int, help="a version pushed from here (default: the latest)")
    pull.add_argument("--force", action="store_true", help="replace an experiment of the same name")


def run(args, client=None):
    """`client` replaces the Kaggle API in tests."""
    from paddy.remote import steps

    return {"run": steps.run, "status": steps.status, "pull": steps.pull}[args.action](args, client=client)
