"""Progress bars on a terminal, a few plain lines in a log: tqdm's carriage returns fill `dvc repro` logs with noise."""

import sys
import time

from tqdm import tqdm


def progress(iterable, desc, total=None, unit="it", stream=None, every_s=60.0):
    """`iterable` with a tqdm bar when `stream` (default stderr) is a terminal. Otherwise (a log, a pipe) the plain
    items, one line every `every_s` seconds while it runs and one at the end: '<desc>: <n> <unit> in <s> s (<rate>)'.
    """
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, desc=desc, total=total, unit=unit, file=stream)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return _plain(iterable, desc, total, unit, stream, every_s)


def _plain(iterable, desc, total, unit, stream, every_s):
    start = last = time.monotonic()
    count = 0
    for item in iterable:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            done = f"{count}/{total}" if total else f"{count}"
            print(f"{desc}: {done} {unit} after {now - start:.0f} s", file=stream, flush=True)
    seconds = time.monotonic() - start
    rate = f"{count / seconds:.1f} {unit}/s" if seconds > 0 else "instant"
    print(f"{desc}: {count} {unit} in {seconds:.1f} s ({rate})", file=stream, flush=True)
