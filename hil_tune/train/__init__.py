"""Training: datasets for torch, proxy and predictor training loops, tasks, checkpoints, evaluation."""
