"""Training utilities: optimizers and schedules, config overrides, metrics."""
