"""Stop signals (SIGINT, SIGTERM): a graceful stop inside the training loop, an exit elsewhere.

The CLIs call :func:`install` first thing: Python's C-level handler then writes each signal to
a pipe (``signal.set_wakeup_fd``) and one watcher thread reads it, so a signal is acted on at
once even while the main thread is inside XLA (compiling, waiting for a step); the
main-thread Python handler does nothing (no ``KeyboardInterrupt`` in the middle of XLA). Inside :func:`graceful_stop`
(the training loop) the first signal sets the stop event: the loop saves a checkpoint at the
next step boundary and returns. Anywhere else, and for a second signal, the process prints
one line, runs the :func:`on_abort` clean-ups (the workdir lock) and exits at once with
status ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM): nothing half-done is
written (Orbax writes a checkpoint under a temporary name and renames it when complete).

Without :func:`install` (library use), :func:`graceful_stop` sets the event from ordinary
Python signal handlers and a second signal raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Watcher:
  """The thread that receives the blocked stop signals (one per process)."""

  def __init__(self):
    self.stop = threading.Event()
    self.graceful_depth = 0
    self.cleanups: list[Callable[[], None]] = []
    self._pipe, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for sig in SIGNALS:
      signal.signal(sig, lambda signum, frame: None)  # acted on by the watcher thread
    threading.Thread(target=self._run, name="vicreg_jax-signals", daemon=True).start()

  def _run(self) -> None:
    while True:
      signum = os.read(self._pipe, 1)[0]
      if signum not in SIGNALS:
        continue
      name = signal.Signals(signum).name
      if self.graceful_depth and not self.stop.is_set():
        self.stop.set()
        print(f"{name}: saving a checkpoint at the next step boundary, then stopping "
              "(send it again to exit at once).", file=sys.stderr, flush=True)
        continue
      second = self.stop.is_set()
      print(f"{name}: {'second stop signal, ' if second else ''}exiting at once"
            + (" (the last complete checkpoint is kept)." if second else "."),
            file=sys.stderr, flush=True)
      for cleanup in reversed(self.cleanups):
        cleanup()
      os._exit(128 + signum)  # pylint: disable=protected-access  (threads may be in XLA)


_watcher: _Watcher | None = None


def install() -> None:
  """Routes SIGINT/SIGTERM to the watcher thread (call from the main thread)."""
  global _watcher  # pylint: disable=global-statement
  if _watcher is None:
    _watcher = _Watcher()


@contextlib.contextmanager
def on_abort(cleanup: Callable[[], None]) -> Iterator[None]:
  """Runs ``cleanup`` if a signal ends the process inside the ``with`` block (CLIs only)."""
  if _watcher is None:
    yield
    return
  _watcher.cleanups.append(cleanup)
  try:
    yield
  finally:
    _watcher.cleanups.remove(cleanup)


@contextlib.contextmanager
def graceful_stop() -> Iterator[threading.Event]:
  """Inside the block the first SIGINT/SIGTERM sets the yielded event instead of exiting."""
  if _watcher is not None:
    _watcher.graceful_depth += 1
    try:
      yield _watcher.stop
    finally:
      _watcher.graceful_depth -= 1
    return
  event = threading.Event()

  def handle(signum, frame):  # pylint: disable=unused-argument
    if event.is_set():
      raise KeyboardInterrupt
    logging.warning("Received %s: saving a checkpoint and stopping.",
                    signal.Signals(signum).name)
    event.set()

  previous = {sig: signal.signal(sig, handle) for sig in SIGNALS}
  try:
    yield event
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
