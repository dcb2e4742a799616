"""One error type for bad input: its message is a whole paragraph that says what is wrong and how to fix it."""

import functools
import sys


class PaddyError(Exception):
    """Bad input or configuration. Stages print the message and exit 2, never a traceback."""


def exit_on_error(main):
    """Wrap a stage's main() so a PaddyError becomes one clear paragraph on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PaddyError as e:
            sys.exit(report(e))

    return wrapper


def report(error):
    """Print a PaddyError as one paragraph on stderr; returns the exit code for it, 2."""
    print(f"\nerror: {error}\n", file=sys.stderr)
    return 2
