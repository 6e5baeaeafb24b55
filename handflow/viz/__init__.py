"""Plots and overlays."""
