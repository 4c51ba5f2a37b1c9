"""Upper bounds of numeric inputs: the largest value the code (and numpy, torch, Kubernetes) can honour.

A light module with no imports, shared by the config model and the command line's flag parsers.
"""

MAX_SEED = 2**32  # exclusive: numpy's legacy seeding and many tools take 32-bit seeds
MAX_MULTIPLIER = 1_000_000
MAX_WORKERS = 1024
MAX_SECONDS = 366 * 86400  # a year: fits Kubernetes' activeDeadlineSeconds (int64) and time arithmetic
MAX_SIZE = 2**50  # 1 PiB: beyond any machine or pod, still exact for cgroups and Kubernetes quantities
MAX_COUNT = 10**12  # steps, trials and other counts
MAX_GRID_POINTS = 100_000  # a grid search's combinations: more is refused (naming its size) before any runs
MAX_YAML_BYTES = 4 * 2**20  # a config or space file: read only up to this (a 100,000-value list fits)
