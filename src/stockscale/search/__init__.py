"""Hyperparameter search: the Searcher interface, its strategy and pruner registry, and the searchers."""
