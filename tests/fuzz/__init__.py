"""Hypothesis-generated bad input through transform and the running pipeline."""
