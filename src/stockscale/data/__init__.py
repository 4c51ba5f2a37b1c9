"""Data: sources of daily OHLCV prices, windows and normalization, scaled datasets, loaders."""
