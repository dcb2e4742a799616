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
            print(f"\nerror: {e}\n", file=sys.stderr)
            sys.exit(2)

    return wrapper
