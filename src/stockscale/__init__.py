"""stockscale: what a cluster gives over one machine when training an LSTM stock model, measured."""

__version__ = "0.1.0"
