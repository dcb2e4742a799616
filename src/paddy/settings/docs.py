"""docs/settings.md, generated from the declarations (paddy.settings.schema): every setting with its default, what it
may hold, the stages that rerun when it changes, and the comment params.yaml shows.

`python -m paddy.settings.docs` rewrites it; tests/settings/test_settings_declared.py checks it is what this writes."""

import dataclasses
import sys
from pathlib import Path

from paddy.files import write_text
from paddy.settings import schema
from paddy.settings.schema import settings_of

PATH = Path("docs/settings.md")
HEAD = """# Settings

Every setting of params.yaml, generated from its declaration in `src/paddy/settings/schema.py` by
`python -m paddy.settings.docs` (a test checks this file is what it writes). Change one for one experiment with
`dvc exp run -S key=value`; **reruns** lists the stages DVC runs again when it changes (the check stage reads every
setting and always runs). A bad value stops the check stage with a message naming the key and what it may hold.

Adding a setting: declare it in its section's dataclass (default, check, comment, stages), give it the same default
and comment in `params.yaml`, and read it where it is used. `tests/settings/test_settings_declared.py` names anything
else it needs: a dvc.yaml stage that lists its settings one by one, and this file (`python -m paddy.settings.docs`).
"""


def leaves(cls, prefix=""):
    """(dotted name, Field) of every setting under section `cls`, in declaration order."""
    for name, f in settings_of(cls).items():
        if dataclasses.is_dataclass(f.type):
            yield from leaves(f.type, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", f


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(rows):
    lines = ["| setting | default | may hold | reruns | what it is |", "|---|---|---|---|---|"]
    for dotted, f in rows:
        default = "" if f.default is dataclasses.MISSING else f"`{f.default!r}`"
        reruns = ", ".join(f.metadata["stages"]) or "nothing"
        cells = [f"`{dotted}`", default, f.metadata["check"].allowed(), reruns, f.metadata["doc"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def settings_markdown():
    parts = [HEAD, "## Top level\n", _table([("seed", settings_of(schema.Settings)["seed"])])]
    for name, f in settings_of(schema.Settings).items():
        if dataclasses.is_dataclass(f.type):
            doc = " ".join(f.type.__doc__.split())
            parts += [f"\n## {name}\n", f"{doc}\n", _table(leaves(f.type, f"{name}."))]
    doc = " ".join(schema.ModelSettings.__doc__.split())
    parts += ["\n## models.&lt;name&gt;\n", f"{doc}\n", _table(leaves(schema.ModelSettings, "models.<name>."))]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    write_text(Path(sys.argv[1]) if len(sys.argv) > 1 else PATH, settings_markdown())
