"""Cameras and projection, multi-view triangulation, Procrustes and root alignment."""
