"""Figures as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

import numpy as np

from handflow.data import pipeline
from handflow.geometry import cameras
from handflow.hand import conventions


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


def overlay_png(
  model, batch, pred, *, title: str = "", clip: int = 0, frame: int = 0, views: int = 4
) -> bytes:
  """Mesh (translucent, painter-sorted), keypoints and skeleton of the prediction (colour),
  the ground truth keypoints (white crosses) and each joint's 2D hypotheses (dots).

  batch: a NumPy batch of the pipeline (normalised images, K, T_cam_world, optional uv);
  pred: a method's `predict` outputs for it (vertices and joints [b, t, ..., 3] world; optional
  uv_hypotheses [b, t, v, 21, k, 2] crop pixels)."""
  from matplotlib.collections import PolyCollection

  v = min(views, batch["images"].shape[2])
  plt, (fig, axes) = _figure(1, v, figsize=(3.2 * v, 3.4))
  axes = np.atleast_1d(axes)
  faces = np.asarray(model.faces)
  parents = conventions.OPENPOSE_PARENTS
  colours = plt.get_cmap("tab10")
  for i in range(v):
    ax = axes[i]
    img = batch["images"][clip, frame, i] * pipeline.IMAGE_STD + pipeline.IMAGE_MEAN
    ax.imshow(np.clip(img, 0, 1), extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
    K, T = batch["K"][clip, frame, i], batch["T_cam_world"][clip, frame, i]
    uv_v, depth_v = (
      np.asarray(a) for a in cameras.world_to_image(K, T, pred["vertices"][clip, frame])
    )
    uv_j, _ = (np.asarray(a) for a in cameras.world_to_image(K, T, pred["joints"][clip, frame]))
    tri_depth = depth_v[faces].mean(-1)
    order = np.argsort(-tri_depth)  # far first
    ax.add_collection(
      PolyCollection(uv_v[faces[order]], facecolor=(0.3, 0.6, 1.0, 0.25), edgecolor="none")
    )
    hyp = pred["uv_hypotheses"][clip, frame, i] if "uv_hypotheses" in pred else None  # [21, K, 2]
    for j in range(21):
      c = colours((j - 1) // 4 % 10 if j else 0)
      if hyp is not None:
        ax.scatter(hyp[j, :, 0], hyp[j, :, 1], s=1.5, color=c, alpha=0.5)
      if parents[j] >= 0:
        p = parents[j]
        ax.plot([uv_j[j, 0], uv_j[p, 0]], [uv_j[j, 1], uv_j[p, 1]], color=c, lw=1.2)
    if "uv" in batch:
      gt = batch["uv"][clip, frame, i]
      ax.scatter(gt[:, 0], gt[:, 1], marker="x", s=12, color="white", lw=0.8)
    size = img.shape[0]
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_title(f"view {i}", fontsize=9)
    ax.axis("off")
  fig.suptitle(
    f"{title} (mesh and skeleton: prediction; x: ground truth; dots: 2D hypotheses)", fontsize=9
  )
  return _png(plt, fig)


def curve_png(rows: list[dict], final: dict, curves, reference=None) -> bytes:
  """The loss and its terms against the step; the periodic validation metrics `curves`
  [(key in rows, label)], with `reference` (key in `final`, label) as a horizontal line."""
  plt, (fig, axes) = _figure(1, 2, figsize=(11, 3.8))
  train_rows = [r for r in rows if "loss" in r]
  steps = np.array([r["step"] for r in train_rows])
  for key in ["loss"] + sorted(k for k in train_rows[0] if k.startswith("loss/")):
    vals = np.array([r.get(key, np.nan) for r in train_rows], dtype=float)
    if np.all(~np.isfinite(vals)) or np.nanmax(np.abs(vals)) == 0:
      continue
    axes[0].plot(steps, vals, label=key, lw=2 if key == "loss" else 1)
  axes[0].set_yscale("symlog", linthresh=1e-3)
  axes[0].set_xlabel("step")
  axes[0].set_title("training loss and its terms (weighted total, raw terms)", fontsize=9)
  axes[0].legend(fontsize=6, ncol=2)
  for key, label in curves:
    ev = [r for r in rows if key in r]
    if ev:
      axes[1].plot([r["step"] for r in ev], [r[key] for r in ev], marker="o", label=label)
  if reference is not None and final.get(reference[0]) is not None:
    axes[1].axhline(final[reference[0]], color="k", ls="--", lw=1, label=reference[1])
  axes[1].set_xlabel("step")
  if axes[1].get_legend_handles_labels()[0]:
    axes[1].legend(fontsize=7)
  axes[1].set_title("validation split during training", fontsize=9)
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
