"""Preemption and Ctrl-C as a flag the training loop checks between steps.

  with interrupts.StopFlag() as stop:
    ...                              # after each step:
    if stop.requested:               # "SIGTERM" or "SIGINT"
      save(); raise interrupts.Preempted(step, total, stop.requested, directory)

A signal never interrupts a step or its checkpoint: it is recorded, and the loop ends at the
next step boundary after saving. The entry turns `Preempted` into exit code 128 + the signal's
number (what a scheduler expects of a process stopped by that signal).
"""

from __future__ import annotations

import signal
import sys

import jax


class Preempted(RuntimeError):
  """The run stopped on SIGTERM or SIGINT after saving a checkpoint at `step`."""

  def __init__(self, step: int, total: int, signame: str, directory):
    self.step, self.total, self.signame, self.directory = step, total, signame, directory
    self.exit_code = 128 + int(getattr(signal, signame))
    super().__init__(
      f"{signame} at step {step} of {total}: checkpoint {step} saved in {directory}; no final "
      "report was written. Run the same command again to resume from it"
    )


class StopFlag:
  """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag checked between steps, so the
  step and its checkpoint finish whole; a second Ctrl-C stops at once. Restores the old
  handlers on exit."""

  SIGNALS = ("SIGTERM", "SIGINT")

  def __init__(self):
    self.requested = None  # the signal's name

  def __enter__(self):
    self._old = {}
    for name in self.SIGNALS:
      try:
        self._old[name] = signal.signal(getattr(signal, name), self._handle)
      except ValueError:  # not the main thread: no handlers
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if name == "SIGINT" and self.requested == "SIGINT":
      raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
    self.requested = name
    if name == "SIGINT" and jax.process_index() == 0:
      print(
        "\nhandflow: Ctrl-C: saving a checkpoint after this step (Ctrl-C again stops at once)",
        file=sys.stderr,
        flush=True,
      )

  def __exit__(self, *exc):
    for name, old in self._old.items():
      signal.signal(getattr(signal, name), old)
