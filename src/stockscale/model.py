"""The LSTM regressor: 60 days x 5 features in, the next day's (scaled) close move out."""

from __future__ import annotations

import torch
from torch import nn


class LSTMRegressor(nn.Module):
    """Stacked LSTM over the window; a linear head reads the last time step's hidden state."""

    def __init__(self, input_size: int = 5, hidden_size: int = 64, num_layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.lstm = nn.LSTM(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,  # dropout acts between stacked layers only
            batch_first=True,
        )
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(windows)
        return self.head(outputs[:, -1]).squeeze(-1)
