"""`stockscale plan`: memory, boundary, time and cost predicted from calibrated models, checked by measured runs.

One module per job: layout.py (bytes per window from the loaders' data layout), memory_model.py (peak per
worker = fixed(world) + bytes per window x windows held), time_model.py (seconds per step per world size),
calibration.py (the short runs and their folder), models.py (the models built from a calibration), cost.py
(renting and buying), planner.py (the answer and its text), verify.py (predicted against measured).
"""
