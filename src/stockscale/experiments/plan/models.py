"""The calibrated models of one loader, built from a calibration file (calibration.py)."""

from __future__ import annotations

from stockscale.experiments.plan.calibration import CalibrationFile
from stockscale.experiments.plan.memory_model import MIN_RELATIVE_MARGIN, MemoryModel
from stockscale.experiments.plan.time_model import TimeModel

LAYOUT_TOLERANCE = 0.10  # the layout check fails beyond this: the measured bytes per window are used instead


def bytes_per_window(calibration: CalibrationFile, loader: str) -> tuple[float, str]:
    """The layout's bytes per window when the calibration's check agrees with it (within LAYOUT_TOLERANCE),
    else the measured slope between the calibration's two sizes: what the process really holds per window
    (the lazy loader holds about a third more than its replica series here), and the plan says which."""
    entry = calibration.loaders[loader]
    layout, measured = entry.layout_bytes_per_window, entry.measured_bytes_per_window
    if layout > 0 and abs(measured - layout) / layout > LAYOUT_TOLERANCE:
        return measured, (f"measured {measured:.1f} B (the layout's {layout:.1f} B was {measured / layout - 1:+.0%} "
                          "off at the calibration's second size)")
    return layout, f"the layout's {layout:.1f} B (checked: {measured:.1f} B measured at a second size)"


def memory_model(calibration: CalibrationFile, loader: str) -> MemoryModel:
    """The loader's memory model: bytes per window (the layout's, or the measured ones where the check
    failed), the measured fixed costs, and margins from the check (how far the measured peak at the second
    size was from the model's prediction)."""
    entry = calibration.loaders[loader]
    layout, _ = bytes_per_window(calibration, loader)
    if layout > 0:
        relative = abs(entry.measured_bytes_per_window - layout) / layout
        residual = 0.0
    else:  # stream: nothing should grow with the data; what did is a fixed-cost uncertainty
        relative, residual = MIN_RELATIVE_MARGIN, abs(entry.layout_residual_bytes)
    shared = calibration.shared_file_bytes if calibration.limit_mechanism.startswith("cgroup") else 0
    return MemoryModel(loader=loader, bytes_per_window=layout, windows_per_replica=calibration.windows_per_replica,
                       fixed_bytes=entry.fixed_bytes, shared_bytes=shared,
                       data_relative_error=max(relative, MIN_RELATIVE_MARGIN), fixed_residual_bytes=residual,
                       largest_calibrated_windows=entry.largest_windows_per_worker)


def time_model(calibration: CalibrationFile, loader: str) -> TimeModel:
    entry = calibration.loaders[loader]
    return TimeModel(cores=int(calibration.key.machine["cores"]), windows_per_replica=calibration.windows_per_replica,
                     batch_size=int(calibration.key.model["batch_size"]), step_seconds=entry.step_seconds,
                     overhead_seconds=entry.overhead_seconds, warmup_seconds=entry.warmup_seconds)
