"""Sweep capture: plan (sources x Latin-hypercube parameter sets), the capture loop, the dataset."""
