"""Differentiable and hard rasterization of triangle meshes, shading and compositing."""
