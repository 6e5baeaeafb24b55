"""Figures as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np

from handflow.data import crops
from handflow.geometry import cameras
from handflow.hand import conventions
from handflow.render import raster, shading


def _figure(*args, **kw):
  # Imported on first use: only reports draw, and the backend must be set before pyplot loads.
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt, plt.subplots(*args, **kw)


def _png(plt, fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


MESH_RGB = (0.45, 0.7, 1.0)  # the predicted mesh's albedo
MESH_ALPHA = 0.55
GT_COLOUR = "#ffffff"


@functools.partial(jax.jit, static_argnames=("size",))
def _shaded_mesh(verts_cam, faces, K, size):
  frags = raster.rasterize(verts_cam, faces, K, size)
  albedo = jnp.broadcast_to(jnp.asarray(MESH_RGB, verts_cam.dtype), verts_cam.shape)
  light = jnp.zeros(3, verts_cam.dtype)  # a point light at the camera
  rgb = shading.shade_hard(frags, verts_cam, faces, albedo, light, jnp.zeros(3))
  return rgb, frags.mask


def mesh_over(image, verts_world, faces, K, T_cam_world, alpha: float = MESH_ALPHA):
  """image [h, w, 3] in [0, 1] with the mesh rendered over it (z-buffered, Lambert-shaded by a
  light at the camera, blended with `alpha`: the hand under it stays visible)."""
  size = tuple(image.shape[:2])
  verts_cam = cameras.transform(jnp.asarray(T_cam_world), jnp.asarray(verts_world, jnp.float32))
  rgb, mask = jax.device_get(_shaded_mesh(verts_cam, jnp.asarray(faces), jnp.asarray(K), size))
  a = alpha * np.asarray(mask, np.float32)[..., None]
  return np.clip(image * (1.0 - a) + np.asarray(rgb) * a, 0.0, 1.0)


def overlay_png(
  model, batch, pred, *, title: str = "", clip: int = 0, frame: int = 0, views: int = 4
) -> bytes:
  """Per view: the predicted mesh shaded and semi-transparent over the image, the predicted
  skeleton (a colour per finger), the ground truth's keypoints and skeleton (white, dashed) and
  each joint's 2D hypotheses (small dots in its finger's colour), with a legend.

  batch: a NumPy batch of the pipeline (normalised images, K, T_cam_world, optional uv);
  pred: a method's `predict` outputs for it (vertices and joints [b, t, ..., 3] world; optional
  uv_hypotheses [b, t, v, 21, k, 2] crop pixels)."""
  from matplotlib.lines import Line2D
  from matplotlib.patches import Patch

  v = min(views, batch["images"].shape[2])
  plt, (fig, axes) = _figure(1, v, figsize=(3.4 * v, 3.9))
  axes = np.atleast_1d(axes)
  faces = np.asarray(model.faces)
  parents = conventions.OPENPOSE_PARENTS
  colours = plt.get_cmap("tab10")
  finger = lambda j: colours((j - 1) // 4 % 10 if j else 0)
  hyp_all = pred.get("uv_hypotheses")
  for i in range(v):
    ax = axes[i]
    img = crops.denormalise(batch["images"][clip, frame, i])
    K, T = batch["K"][clip, frame, i], batch["T_cam_world"][clip, frame, i]
    shown = mesh_over(np.clip(img, 0, 1), pred["vertices"][clip, frame], faces, K, T)
    ax.imshow(shown, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
    uv_j, _ = (np.asarray(a) for a in cameras.world_to_image(K, T, pred["joints"][clip, frame]))
    hyp = None if hyp_all is None else hyp_all[clip, frame, i]  # [21, K, 2]
    gt = batch["uv"][clip, frame, i] if "uv" in batch else None
    for j in range(21):
      if hyp is not None:
        ax.scatter(hyp[j, :, 0], hyp[j, :, 1], s=2, color=finger(j), alpha=0.6, lw=0)
      if parents[j] >= 0:
        p = parents[j]
        if gt is not None:
          ax.plot(gt[[j, p], 0], gt[[j, p], 1], color=GT_COLOUR, lw=0.9, ls="--", alpha=0.9)
        ax.plot(uv_j[[j, p], 0], uv_j[[j, p], 1], color=finger(j), lw=1.6)
    if gt is not None:
      ax.scatter(gt[:, 0], gt[:, 1], marker="x", s=14, color=GT_COLOUR, lw=0.9)
    size = img.shape[0]
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_title(f"view {i}", fontsize=9)
    ax.axis("off")
  handles = [
    Patch(facecolor=MESH_RGB, alpha=MESH_ALPHA, label="predicted mesh"),
    Line2D([], [], color=finger(5), lw=1.6, label="predicted skeleton (colour: finger)"),
  ]
  if "uv" in batch:
    handles.append(
      Line2D([], [], color="0.4", ls="--", marker="x", lw=0.9, label="ground truth (white)")
    )
  if hyp_all is not None:
    handles.append(
      Line2D([], [], color=finger(5), marker=".", ls="none", label="2D hypotheses per joint")
    )
  fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
  fig.suptitle(title, fontsize=10)
  fig.subplots_adjust(bottom=0.1)
  return _png(plt, fig)


_NOT_CURVES = ("step", "loss", "nonfinite", "skipped", "steps_per_s")


def curve_png(rows: list[dict], final: dict, curves, reference=None) -> bytes:
  """Three panels: the training loss and its terms; the training-time metrics (gradient norm,
  the method's diagnostics: not losses); the periodic validation metrics `curves` [(key in
  rows, label)], with `reference` (key in `final`, label) as a horizontal line."""
  plt, (fig, axes) = _figure(1, 3, figsize=(15, 3.8))
  train_rows = [r for r in rows if "loss" in r]
  steps = np.array([r["step"] for r in train_rows])
  series = lambda key: np.array([r.get(key, np.nan) for r in train_rows], dtype=float)
  for key in ["loss"] + sorted(k for k in train_rows[0] if k.startswith("loss/")):
    vals = series(key)
    if np.all(~np.isfinite(vals)) or np.nanmax(np.abs(vals)) == 0:
      continue
    axes[0].plot(steps, vals, label=key, lw=2 if key == "loss" else 1)
  axes[0].set_yscale("symlog", linthresh=1e-3)
  axes[0].set_title("training loss (bold: weighted total) and its raw terms", fontsize=9)
  axes[0].legend(fontsize=6, ncol=2)
  others = sorted(
    k for k in train_rows[0] if k not in _NOT_CURVES and not k.startswith(("loss/", "eval/"))
  )
  for key in others:
    vals = series(key)
    if np.any(np.isfinite(vals)):
      axes[1].plot(steps, vals, label=key, lw=1)
  axes[1].set_yscale("symlog", linthresh=1e-2)
  axes[1].set_title("training metrics (not losses)", fontsize=9)
  if others:
    axes[1].legend(fontsize=6)
  for key, label in curves:
    ev = [r for r in rows if key in r]
    if ev:
      axes[2].plot([r["step"] for r in ev], [r[key] for r in ev], marker="o", label=label)
  if reference is not None and final.get(reference[0]) is not None:
    axes[2].axhline(final[reference[0]], color="k", ls="--", lw=1, label=reference[1])
  if axes[2].get_legend_handles_labels()[0]:
    axes[2].legend(fontsize=7)
  axes[2].set_title("validation split during training", fontsize=9)
  for ax in axes:
    ax.set_xlabel("step")
  return _png(plt, fig)


def image_grid_png(columns: list[tuple[str, np.ndarray]], title: str = "") -> bytes:
  """A grid of images: one column per (label, images [rows, h, w, 3] in [0, 1])."""
  rows = columns[0][1].shape[0]
  plt, (fig, axes) = _figure(
    rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows + 0.4), squeeze=False
  )
  for c, (label, images) in enumerate(columns):
    for r in range(rows):
      ax = axes[r, c]
      ax.imshow(np.clip(images[r], 0.0, 1.0), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(label, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  return _png(plt, fig)


def ci_lines_png(x_labels, series: dict, xlabel: str, ylabel: str, title: str = "") -> bytes:
  """One line per series {name: [(mean, lo, hi) per x]} with its interval as error bars (claim
  experiments: a metric per setting, mean and bootstrap CI over seeds)."""
  plt, (fig, ax) = _figure(figsize=(6, 3.5))
  for name, cis in series.items():
    cis = np.asarray(cis, np.float64).reshape(-1, 3)
    err = np.stack([cis[:, 0] - cis[:, 1], cis[:, 2] - cis[:, 0]])
    ax.errorbar(range(len(cis)), cis[:, 0], yerr=err, marker="o", capsize=3, label=name)
  ax.set_xticks(range(len(x_labels)), list(x_labels))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)
  return _png(plt, fig)
