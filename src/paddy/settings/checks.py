"""What a setting may hold: the checks its declaration names (paddy.settings.schema), each with the one-paragraph
error a bad value gets and the text docs/settings.md shows. A check returns the value as the settings hold it (a size
as a (height, width) tuple, a list as a tuple)."""

import math
import re
from dataclasses import dataclass

from paddy.errors import PaddyError


def refuse(dotted, path, value, must):
    raise PaddyError(f"`{dotted}` in {path} is {value!r}; it must be {must}.")


@dataclass(frozen=True)
class Number:
    """lo <= value <= hi, above < value < below; an integer if `integer`; `auto` also accepts the string auto."""

    lo: float | None = None
    hi: float | None = None
    above: float | None = None
    below: float | None = None
    integer: bool = False
    auto: bool = False
    why: str = ""  # appended to the error: what the bounds protect

    def __call__(self, value, dotted, path):
        if self.auto and value == "auto":
            return value
        ok = isinstance(value, int if self.integer else (int, float)) and not isinstance(value, bool)
        ok = ok and (not isinstance(value, float) or math.isfinite(value))  # YAML's .nan, .inf: no rate, no size
        lo, hi, above = self.lo, self.hi, self.above
        ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi) and (above is None or value > above)
        ok = ok and (self.below is None or value < self.below)
        if not ok:
            refuse(dotted, path, value, self.allowed() + self.why)
        return value

    def allowed(self):
        bounds = [f"at least {self.lo}" if self.lo is not None else ""]
        bounds += [
            f"above {self.above}" if self.above is not None else "",
            f"at most {self.hi}" if self.hi is not None else "",
            f"below {self.below}" if self.below is not None else "",
        ]
        text = " and ".join(b for b in bounds if b)
        kind = "an integer" if self.integer else "a number"
        return f"{'auto or ' if self.auto else ''}{kind}{' ' + text if text else ''}"


@dataclass(frozen=True)
class Flag:
    def __call__(self, value, dotted, path):
        if not isinstance(value, bool):
            refuse(dotted, path, value, self.allowed())
        return value

    def allowed(self):
        return "true or false"


@dataclass(frozen=True)
class OneOf:
    """One of `choices`; `explained` replaces the bare list in the error where the choices need words."""

    choices: tuple
    explained: str = ""

    def __call__(self, value, dotted, path):
        if value not in self.choices:
            refuse(dotted, path, value, self.explained or self.allowed())
        return value

    def allowed(self):
        return f"one of {', '.join(self.choices)}"


@dataclass(frozen=True)
class Text:
    empty: bool = True
    why: str = ""

    def __call__(self, value, dotted, path):
        if not isinstance(value, str) or (not self.empty and not value):
            refuse(dotted, path, value, self.allowed() + self.why)
        return value

    def allowed(self):
        return f"{'a' if self.empty else 'a non-empty'} text"


@dataclass(frozen=True)
class Template:
    """A path inside the competition folder with {id} where an image's id goes (and, where `label`, {label} for its
    class folder)."""

    label: bool
    example: str
    hint: str = ""  # appended to the error

    def __call__(self, value, dotted, path):
        Text(empty=False)(value, dotted, path)
        fields = set(re.findall(r"{([^}]*)}", value))
        allowed = {"id", "label"} if self.label else {"id"}
        if "id" not in fields or not fields <= allowed or value.startswith("/") or ".." in value.split("/"):
            raise PaddyError(
                f"`{dotted}` in {path} is {value!r}; it must be a path inside the competition folder {self.example}."
                f"{self.hint}"
            )
        return value

    def allowed(self):
        return self.example


def as_hw(value):
    """A size given as 224 or [320, 224] (height, width) -> (height, width), or None if malformed: the one place
    a size is read; everything past the settings takes the tuple."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (int(value[0]), int(value[1]))
    return None


@dataclass(frozen=True)
class Size:
    """224 or [height, width], each side at most `max_side` pixels; held as (height, width)."""

    max_side: int

    def __call__(self, value, dotted, path):
        hw = as_hw(value)
        if hw is None:
            raise PaddyError(f"`{dotted}` in {path} is {value!r}; give 224 or [height, width].")
        if max(hw) > self.max_side:
            raise PaddyError(
                f"`{dotted}` in {path} is {value!r}; a side may be at most {self.max_side} pixels (one such image is "
                "50 MB as the item cache holds it, and no model here was built for it)."
            )
        return hw

    def allowed(self):
        return f"224 or [height, width], sides of at most {self.max_side} pixels"


@dataclass(frozen=True)
class Either:
    """A value `ok` accepts (ok(value) -> bool), held as convert(value); else the error says `must`."""

    ok: object
    must: str
    convert: object = None

    def __call__(self, value, dotted, path):
        if not self.ok(value):
            refuse(dotted, path, value, self.must)
        return value if self.convert is None else self.convert(value)

    def allowed(self):
        return self.must
