"""One progress line per few seconds of long evaluation work, with an ETA."""
import sys
import time


class Progress:
  """Counts `total` units of work labelled `label`; `advance` prints at most
  one line per `every` seconds (and always the last one) to stderr."""

  def __init__(self, label: str, total: int, unit: str, *, enabled: bool = True,
               every: float = 5.0, stream=None):
    self.label, self.total, self.unit = label, total, unit
    self.enabled, self.every = enabled, every
    self.stream = stream or sys.stderr
    self.done = 0
    self._start = self._last = time.time()

  def advance(self, count: int = 1):
    self.done += count
    now = time.time()
    if not self.enabled or (now - self._last < self.every and self.done < self.total):
      return
    self._last = now
    elapsed = now - self._start
    eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
    print(f"[{self.label}] {self.done}/{self.total} {self.unit}, {elapsed:.0f} s elapsed, "
          f"about {eta:.0f} s left", file=self.stream, flush=True)
