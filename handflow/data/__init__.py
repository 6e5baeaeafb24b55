"""Datasets (TFDS builders), pseudo-labels and the input pipeline."""
