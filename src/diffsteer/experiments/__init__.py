"""Whole experiments built on the runner: strength sweeps, weight calibration, previews."""
