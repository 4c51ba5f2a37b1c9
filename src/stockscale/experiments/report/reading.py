"""What the model's predictions did, in words computed from the numbers: no sentence here is canned.

A test RMSE beside persistence's does not say whether a model learned anything beyond the training trend: a
model that predicts a near-constant rise scores close to persistence and "up" on every day. So the reading
states the predictions' mean move against the training drift, the share of "up" predictions, the direction
beside always-up's, and which models beat persistence on RMSE, and says what one split and one seed cannot
tell (`stockscale evaluate` tests it across folds and seeds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Predicting one direction on at least this share of days is a one-way (drift) model, whatever it read.
ONE_WAY_SHARE = 0.95
PRICE_BASELINES = ("persistence", "drift", "ridge")


def _pct(value: float) -> str:
    return f"{value * 100:+.3f} %/day"


def moves_sentence(subject: str, move: float, up: float, drift: float | None, drift_words: str,
                   one_way_words: str) -> str:
    """What the predictions did, in one clause: their mean move beside the training drift, the share of "up"
    days, and `one_way_words` when nearly every day went one way (one split's reading, and across folds)."""
    text = f"{subject} predicted a mean move of {_pct(move)}"
    if drift is not None:
        text += f" ({drift_words} {_pct(drift)})"
    text += f" and \"up\" on {up * 100:.0f} % of the days"
    if up >= ONE_WAY_SHARE or up <= 1 - ONE_WAY_SHARE:
        text += one_way_words
    return text


def reading(model: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]], name: str = "the LSTM") -> str:
    """One paragraph on one split: `model` is the model's score (with mean_predicted_move and up_share),
    `baselines` each baseline's score on the same windows (split_baselines)."""
    parts: list[str] = []
    move, up = model.get("mean_predicted_move"), model.get("up_share")
    drift = (baselines.get("drift") or {}).get("daily_log_return")
    if move is not None and up is not None:
        parts.append(moves_sentence(name, move, up, drift, "training drift",
                                    ": one direction nearly every day, a drift model rather than one that reads "
                                    "the window"))
    direction = model.get("directional_accuracy")
    always_up = (baselines.get("always_up") or {}).get("directional_accuracy")
    if direction is not None and always_up is not None:
        relation = "above" if direction > always_up else "below" if direction < always_up else "equal to"
        parts.append(f"its direction was right on {direction * 100:.1f} % of the days, {relation} always-up's "
                     f"{always_up * 100:.1f} % (the share of days that went up)")
    base = (baselines.get("persistence") or {}).get("rmse")
    if base is not None:
        scored = {name: model.get("rmse")} | {b: (baselines.get(b) or {}).get("rmse") for b in PRICE_BASELINES[1:]}
        listed = ", ".join(f"{who} ${rmse:.3f}" for who, rmse in scored.items() if rmse is not None)
        better = [who for who, rmse in scored.items() if rmse is not None and rmse < base]
        verdict = (f"{' and '.join(better)} beat{'s' if len(better) == 1 else ''} persistence" if better
                   else "no model beats persistence")
        parts.append(f"test RMSE: persistence ${base:.3f}; {listed}: {verdict} on this split")
    if not parts:
        return ""
    return "; ".join(parts) + ". One split and one seed: whether a difference is more than chance needs " \
        "`stockscale evaluate` (walk-forward folds, seeds, a Diebold-Mariano test)."
