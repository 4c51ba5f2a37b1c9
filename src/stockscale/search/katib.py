"""The search as one Katib Experiment: Katib's suggestion service chooses each trial from the space (grid,
random, TPE: `Strategy.katib`) and its median stopping rule is the search's pruner (`Pruner.katib`; Katib has
no ASHA, katib#1582). Rendering and following the Experiment is the katib kind's (launch/kubernetes/).
"""

from __future__ import annotations

from stockscale.errors import InputError
from stockscale.launch.kubernetes.controllers import KatibKind
from stockscale.search.controller import ControllerSearcher
from stockscale.search.registry import PRUNERS, Pruner, Strategy


class KatibSearcher(ControllerSearcher):
    name = "katib"
    kind = KatibKind()

    @staticmethod
    def algorithm(strategy: Strategy) -> str | None:
        return strategy.katib

    def check(self, strategy: Strategy, pruner: Pruner) -> None:
        self._refuse_strategy(strategy, "Katib")
        if pruner.prunes and pruner.katib is None:
            known = ", ".join(f"{name} (Katib's {other.katib})" for name, other in PRUNERS.items() if other.katib)
            raise InputError(f"--pruner {pruner.name} on a Katib search: Katib's early stopping has no "
                             f"{pruner.name} (katib#1582), only medianstop: use --pruner {known}")
