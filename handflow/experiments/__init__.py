"""Experiments that train several runs and write one table (python -m handflow.experiments.NAME)."""
