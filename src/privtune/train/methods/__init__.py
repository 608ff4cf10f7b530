"""Training methods, one module each (see privtune.train.method)."""
