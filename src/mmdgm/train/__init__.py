"""Training: the trainer, checkpoints, logging and sample grids."""
