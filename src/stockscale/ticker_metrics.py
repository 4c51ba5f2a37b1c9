"""Per-ticker figures of a pooled model (one model over several tickers), beside its pooled ones.

Why separate: the pooled RMSE and MAE are in dollars over every ticker's windows at once, so a few high-priced
tickers dominate them; MAPE is scale-free and is what ranks the tickers (best and worst by test MAPE). Every
ticker's own figures and its persistence baseline are kept, so any other ranking can be made from metrics.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stockscale.data.windows import EvalSet

Score = Callable[[np.ndarray, EvalSet], dict[str, Any]]


def _part(evalset: EvalSet, rows: np.ndarray) -> EvalSet:
    return EvalSet(evalset.name, evalset.windows[rows], evalset.next_close[rows], evalset.last_price[rows],
                   evalset.next_price[rows], evalset.dates[rows])


def ticker_metrics(val_pred: np.ndarray, val_set: EvalSet, test_pred: np.ndarray, test_set: EvalSet,
                   score: Score, skipped: list[str]) -> dict[str, Any]:
    """metrics.json's "tickers" section: count, skipped, per_ticker {val, test, persistence}, best, worst."""
    per_ticker: dict[str, dict[str, Any]] = {}
    for index, ticker in enumerate(test_set.tickers):
        entry: dict[str, Any] = {"persistence": {}}
        for name, predicted, evalset in (("val", val_pred, val_set), ("test", test_pred, test_set)):
            assert evalset.ticker_index is not None
            rows = np.flatnonzero(evalset.ticker_index == index)
            part = _part(evalset, rows)
            entry[name] = score(predicted[rows], part)
            entry["persistence"][name] = score(part.last_price, part)
        per_ticker[ticker] = entry
    ranked = sorted(per_ticker, key=lambda t: per_ticker[t]["test"]["mape"])

    def pick(ticker: str) -> dict[str, Any]:
        return {"ticker": ticker, "test_mape": per_ticker[ticker]["test"]["mape"],
                "persistence_test_mape": per_ticker[ticker]["persistence"]["test"]["mape"]}

    return {"count": len(per_ticker), "skipped": list(skipped), "ranked_by": "test mape",
            "best": pick(ranked[0]), "worst": pick(ranked[-1]), "per_ticker": per_ticker}
