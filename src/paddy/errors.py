"""One error type for bad input: its message is a whole paragraph that says what is wrong and how to fix it. And
what a stage says when it is stopped (Ctrl-C, SIGTERM): which stage, what it kept, how to go on."""

import functools
import signal
import sys
import time
from pathlib import Path


class PaddyError(Exception):
    """Bad input or configuration. Stages print the message and exit 2, never a traceback."""


# What the running stage says if it is stopped: set by say_on_interrupt once it knows its outputs
_STOPPED = {"stage": None, "kept": None, "signal": "SIGINT", "start": time.monotonic()}


def say_on_interrupt(stage, kept):
    """What a stop (Ctrl-C, SIGTERM) prints: `stage` (e.g. tta@vit) and what stays of its outputs."""
    _STOPPED.update(stage=stage, kept=kept)


def exit_on_error(main):
    """Wrap a stage's main() so a PaddyError becomes one clear paragraph on stderr and exit code 2, and Ctrl-C or
    SIGTERM one paragraph (the stage, what it kept, how to go on) and exit code 130, never a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        _STOPPED.update(start=time.monotonic())
        signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill`, `dvc queue kill`, a preempted machine's notice
        try:
            return main(*args, **kwargs)
        except PaddyError as e:
            sys.exit(print_error(e))
        except KeyboardInterrupt:
            sys.exit(print_interrupt())

    return wrapper


def _raise_interrupt(signum, frame):
    _STOPPED["signal"] = signal.Signals(signum).name
    raise KeyboardInterrupt


def print_error(error):
    """Print a PaddyError as one paragraph on stderr; returns the exit code for it, 2."""
    print(f"\nerror: {error}\n", file=sys.stderr)
    return 2


def print_interrupt():
    """Print what a stopped stage kept and how to go on; returns the exit code for it, 130 (128 + SIGINT)."""
    stage = _STOPPED["stage"] or Path(sys.argv[0]).stem
    kept = _STOPPED["kept"] or "Its outputs are written whole at its end, so they are the last complete run's."
    minutes = (time.monotonic() - _STOPPED["start"]) / 60
    print(
        f"\n{stage} stopped by {_STOPPED['signal']} after {minutes:.1f} min. {kept} Run `dvc repro` again to go on.",
        file=sys.stderr,
    )
    return 130
