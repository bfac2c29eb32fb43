"""The project's input errors: one base that carries file, field and reason, printed as one line.

Every problem a user can fix (a bad scenario or sweep file, a bad command-line value, a calibration
input that cannot be used) raises a subclass of :class:`InputError`. The command line catches the
base in one place and prints ``secmoe-sim: error: FILE:LINE: field.path: reason`` with exit code 2;
anything else is an internal error. Every layer may raise these, so this module imports nothing of
the project.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input; ``str()`` is a single line: ``file[:line]: field: reason`` (empty parts left out)."""

    def __init__(self, file: str, field: str, reason: str, line: int | None = None):
        self.file, self.field, self.reason, self.line = file, field, reason, line
        where = f"{file}:{line}" if file and line else file
        message = ": ".join(part for part in (where, field, reason) if part)
        super().__init__(" ".join(message.splitlines()))


class ScenarioError(InputError):
    """A scenario or hardware file that cannot be loaded or simulated as written."""


class SweepError(InputError):
    """A sweep file, sweep directory or sweep option that cannot be used."""


class UsageError(InputError):
    """A command-line value that cannot be used; ``option`` names it (``--seed``) where there is one."""

    def __init__(self, reason: str, option: str = ""):
        super().__init__(option, "", reason)


class CalibrationError(InputError):
    """A calibration input or environment that cannot be used (torch missing, no CUDA device, a bad trace)."""

    def __init__(self, reason: str, file: str = ""):
        super().__init__(file, "", reason)


class SimulationError(RuntimeError):
    """An internal inconsistency the simulator caught in itself (an op of infinite duration, a GPU whose
    program never finishes, a non-finite result): a bug to report, never written as data."""
