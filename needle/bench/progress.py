"""A progress bar: tqdm when installed, else one line per row on stderr."""
import sys
import time


class _Plain:
    def __init__(self, total, desc):
        self.total, self.n, self.desc, self.t0 = total, 0, desc, time.perf_counter()

    def set_postfix_str(self, text):
        width = len(str(self.total))
        print(f"[{self.n + 1:>{width}}/{self.total}] {time.perf_counter() - self.t0:6.1f}s "
              f"{text}", file=sys.stderr, flush=True)

    def update(self, n=1):
        self.n += n

    def write(self, text):
        print(text, file=sys.stderr, flush=True)

    def close(self):
        pass


def bar(total, desc="needle-bench", enabled=True):
    """An object with set_postfix_str(), update(), write() and close()."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            tty = sys.stderr.isatty()
            return _Tqdm(tqdm(total=total, desc=desc, unit="row", file=sys.stderr,
                              dynamic_ncols=True, leave=True, mininterval=0.1 if tty else 15.0),
                         tty)
    return _Plain(total, desc)


class _Tqdm:
    def __init__(self, t, tty):
        self.t, self.tty = t, tty

    def set_postfix_str(self, text):
        self.t.set_postfix_str(text, refresh=self.tty)  # in a log, refresh at mininterval

    def update(self, n=1):
        self.t.update(n)

    def write(self, text):
        self.t.write(text, file=sys.stderr)

    def close(self):
        self.t.close()
