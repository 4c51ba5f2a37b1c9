"""The two comparisons (dataset scale, hyperparameter search), the report and the demo."""
