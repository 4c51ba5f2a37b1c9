"""Start-up per backend, measured on this machine where it can be (the calibration keeps them), never guessed.

A trial's start-up is its wall time less its training loop (`train_seconds`): what a search pays per trial
beside the training itself.
- `warm_worker`: WarmRunner's per-trial overhead. Two tiny trials (2 steps of the calibrated model) on one
  worker that was started (prewarmed) before either was handed to it; a trial's wall time runs from its
  hand-over to its result (launch/warm.py), so the worker's own start is in neither. The median of the two.
- `container`: one tiny trial as a container of the stockscale image (DockerRunner), from the engine's
  create to the result: the container's start, the interpreter's and the trial's set-up. Only when an engine
  answers and the image is built; otherwise its answer is "not measured: no engine" or "not measured: no
  image", with the reason, and no figure.
- `process` (a fresh worker set: launch/local) comes from the loaders' own calibration runs, and `pod` is an
  assumption the user sets (`--pod-startup-seconds`); both are put beside these by the planner.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from pydantic import BaseModel

from stockscale.config import TrainConfig, build_train_config
from stockscale.errors import InputError
from stockscale.launch.local import default_threads
from stockscale.launch.runner import JobResult, TrainJob

WARM_TRIALS = 2
TINY_STEPS = 2
TRIAL_TIMEOUT = 120.0


class Startup(BaseModel):
    """One backend's start-up: seconds (None when not measured) and how it was obtained."""

    seconds: float | None
    source: str                       # "measured ...", "not measured: ...", or "assumption ..."
    samples: list[float] = []         # each measured trial's wall time less its training loop


def tiny_job(cfg: TrainConfig, fields: tuple[str, ...], run_dir: Path, name: str) -> TrainJob:
    """A trial of the calibrated model that trains TINY_STEPS steps on the smallest dataset (multiplier 1)."""
    config = {key: value for key, value in cfg.to_dict().items() if key in fields}
    config.update(loader="memory", epochs=1, checkpoint_dir=None, multiplier=1, max_steps=TINY_STEPS,
                  baselines="cheap")
    return TrainJob(name=name, config=build_train_config(config, "tiny trial"), run_dir=run_dir, workers=1,
                    threads=default_threads(1),
                    timeout=TRIAL_TIMEOUT)


def outside_training(result: JobResult) -> float | None:
    """A successful trial's wall time less its training loop; None for any other outcome."""
    train = (result.metrics or {}).get("train_seconds")
    if result.status != "success" or train is None:
        return None
    return max(0.0, result.wall_seconds - float(train))


def measure_warm(cfg: TrainConfig, fields: tuple[str, ...], folder: Path) -> Startup:
    """WARM_TRIALS tiny trials on one prewarmed WarmRunner worker: the median per-trial overhead."""
    from stockscale.launch.warm import WarmRunner

    jobs = [tiny_job(cfg, fields, folder / "startup" / f"warm-{i}", f"startup-warm-{i}") for i in range(WARM_TRIALS)]
    try:
        results = WarmRunner().run_many(jobs, 1)
    finally:
        shutil.rmtree(folder / "startup", ignore_errors=True)
    samples = [outside_training(result) for result in results]
    if any(sample is None for sample in samples):
        failed = next(result for result in results if outside_training(result) is None)
        return Startup(seconds=None, source=f"not measured: the warm trial {failed.status} ({failed.detail})")
    values = [float(sample) for sample in samples if sample is not None]
    return Startup(seconds=statistics.median(values), samples=values,
                   source=f"measured: median of {len(values)} tiny trials on a prewarmed WarmRunner worker, "
                          "wall from hand-over to result less train_seconds")


def measure_container(cfg: TrainConfig, fields: tuple[str, ...], folder: Path) -> Startup:
    """One tiny trial as a container when an engine answers and the image is built; else why not."""
    from stockscale.launch.cluster_spec import ClusterSpec
    from stockscale.launch.docker import DockerRunner
    from stockscale.launch.docker_engine import check_image, connect_engine

    image = ClusterSpec().image
    try:
        engine = connect_engine()
    except InputError as error:
        return Startup(seconds=None, source=f"not measured: no engine ({error})")
    try:
        check_image(engine, image)
    except InputError as error:
        return Startup(seconds=None, source=f"not measured: no image ({error})")
    launcher = DockerRunner(engine=engine)
    try:
        result = launcher.run(tiny_job(cfg, fields, folder / "startup" / "container", "startup-container"))
    finally:
        shutil.rmtree(folder / "startup", ignore_errors=True)
    sample = outside_training(result)
    if sample is None:
        return Startup(seconds=None, source=f"not measured: the container trial {result.status} ({result.detail})")
    return Startup(seconds=sample, samples=[sample],
                   source=f"measured: one tiny trial as a container of {image}, wall from create to "
                          "result less train_seconds")
