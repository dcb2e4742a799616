"""Progress output: a bar on a terminal, a few plain lines (no carriage returns) in a log."""

import io

from paddy.console import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_one_plain_line_at_the_end():
    log = io.StringIO()
    assert list(progress(range(5), "resize", unit="img", stream=log)) == list(range(5))
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resize: 5 img in ") and "img/s" in lines[0]
    assert "\r" not in log.getvalue()


def test_a_long_loop_adds_a_line_every_so_often():
    log = io.StringIO()
    list(progress(iter(range(3)), "resize", total=3, unit="img", stream=log, every_s=0))
    assert log.getvalue().splitlines()[:3] == [f"resize: {n}/3 img after 0 s" for n in (1, 2, 3)]
    assert len(log.getvalue().splitlines()) == 4


def test_a_terminal_gets_a_tqdm_bar():
    tty = Terminal()
    assert list(progress(range(5), "resize", unit="img", stream=tty)) == list(range(5))
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()


def test_stderr_is_the_default(capsys):
    list(progress([1, 2], "load"))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("load: 2 it in ")
