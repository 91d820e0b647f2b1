"""dpgen_ng: a concurrent-learning engine for machine-learning interatomic potentials."""

__version__ = "0.1.0"
