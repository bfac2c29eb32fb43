"""Calibration: measure a device with torch, fit a hardware file, replay measured op times.

The pieces (each a small module):

* :mod:`.trace`: the versioned trace format (CSV or Parquet) every measurement is written to;
* :mod:`.timing`: one interface for device selection and timing (``cpu`` and ``cuda``);
* :mod:`.microbench` and :mod:`.comm_bench`: torch microbenchmarks of GEMMs, attention, memory-bound
  ops, launch overhead and collectives between real processes;
* :mod:`.profile_import`: a torch.profiler Chrome trace read into the same format;
* :mod:`.shape_fit` and :mod:`.fit`: kernel efficiency by shape, launch overhead, memory bandwidth
  and alpha-beta links fitted to a trace and written as a hardware file;
* :mod:`.replay`: a kernel timer that takes op times from a trace instead of the roofline;
* :mod:`.reference_layer` and :mod:`.check_real`: a real torch sectional layer timed across E and
  compared with the calibrated simulator.

torch is an optional extra: this package imports it only inside the functions that need it, so the
core (and trace reading, fitting and replay) works without it. :func:`require_torch` turns its
absence into a one-line :class:`~secmoe_sim.errors.CalibrationError`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from secmoe_sim.errors import CalibrationError

INSTALL_HINT = "pip install -e '.[calibrate]'"
__all__ = ["INSTALL_HINT", "CalibrationError", "require_torch"]


def require_torch() -> ModuleType:
    """The torch module, or a :class:`CalibrationError` saying how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise CalibrationError(f"this command needs torch, which is not installed: {INSTALL_HINT}") from None
