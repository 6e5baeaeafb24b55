"""The open hand's base skin texture: painted procedurally on its UV layout, shipped as a PNG.

  texture = skin_texture.load()        # [256, 256, 3] float32 in [0, 1] (u right, v down)

`paint` is run once by `handflow.hand.build_open_hand` (the PNG is ours, CC0 like the mesh):
each texel is mapped to the template surface through the UV layout (texel centre -> face ->
barycentrics -> 3D point and normal, in the canonical frame: x wrist -> middle MCP, y out of the
back of the hand, z towards the pinky), and coloured by anatomy: a darker, warmer back and a
lighter palm, flexion creases across the palm side of every finger joint and the palm's
transverse creases, nails on the back of the distal segments, and low-frequency mottling. It is
a base map: CycleHand's texture head adds a learned offset and the skin tone is randomised on
top (`handflow.methods.cyclehand`). MANO ships no UVs, so MANO renders use per-vertex colour.
"""

from __future__ import annotations

import pathlib

import numpy as np

PATH = pathlib.Path(__file__).parent / "assets" / "open_hand_skin.png"
SIZE = 256
BACK_TONE = np.array([0.76, 0.56, 0.45])
PALM_TONE = np.array([0.87, 0.66, 0.58])
NAIL_TONE = np.array([0.91, 0.77, 0.74])
# MANO joint chains (MCP, PIP, DIP; thumb: CMC, MCP, IP) and their fingertip in the
# (thumb, index, middle, ring, pinky) order of `tip_vertex_ids`.
_CHAINS = (((1, 2, 3), 1), ((4, 5, 6), 2), ((7, 8, 9), 4), ((10, 11, 12), 3), ((13, 14, 15), 0))


def uv_islands(face_uv: np.ndarray) -> np.ndarray:
  """Island id [f] of every face: faces connected through shared texture-coordinate corners."""
  from scipy.sparse import coo_matrix
  from scipy.sparse.csgraph import connected_components

  key = np.round(face_uv.reshape(-1, 2) * 1e6).astype(np.int64)
  _, corner = np.unique(key, axis=0, return_inverse=True)
  corner = corner.reshape(-1, 3)
  m = int(corner.max()) + 1
  rows = np.concatenate([corner[:, 0], corner[:, 1]])
  cols = np.concatenate([corner[:, 1], corner[:, 2]])
  _, label = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), (m, m)))
  return label[corner[:, 0]]


def normalise_uv(face_uv: np.ndarray, margin: float = 0.02, strip: float = 0.2) -> np.ndarray:
  """Texture coordinates [f, 3, 2] of a mesh cut from a larger atlas (OBJ: v up) -> a layout of
  the unit square, v down (image rows): the largest UV island fills the left square (all of it
  when it is the only island), the others are stacked in a strip on the right, each scaled
  uniformly (aspect kept) into its cell with `margin` around it."""
  island = uv_islands(face_uv)
  ids = sorted(np.unique(island), key=lambda i: -np.sum(island == i))
  out = np.zeros_like(face_uv)
  main = 1.0 if len(ids) == 1 else 1.0 - strip
  cells = [(0.0, 0.0, main, 1.0)]
  rest = len(ids) - 1
  cells += [(main, k / rest, strip, 1.0 / rest) for k in range(rest)]
  for i, (x0, y0, w, h) in zip(ids, cells, strict=True):
    sel = island == i
    uv = face_uv[sel]
    lo, hi = uv.reshape(-1, 2).min(0), uv.reshape(-1, 2).max(0)
    inner = np.array([w, h]) - 2 * margin
    scale = np.min(inner / np.maximum(hi - lo, 1e-9))
    pad = (inner - (hi - lo) * scale) / 2
    uv = (uv - lo) * scale + np.array([x0, y0]) + margin + pad
    out[sel] = np.stack([uv[..., 0], 2 * y0 + h - uv[..., 1]], -1)  # flip v within the cell
  return out


def _vertex_normals(verts, faces):
  fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
  n = np.zeros_like(verts)
  for k in range(3):
    np.add.at(n, faces[:, k], fn)
  return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def texel_surface(verts, faces, face_uv, size: int = SIZE):
  """Rasterizes the UV layout: per texel centre ((i + 0.5) / size) the 3D point [s, s, 3], the
  normal [s, s, 3] (outward) and whether a face covers it [s, s]."""
  normals = _vertex_normals(verts, faces)
  if np.mean(np.sum(normals * (verts - verts.mean(0)), -1)) < 0:  # inward winding
    normals = -normals
  point = np.zeros((size, size, 3))
  normal = np.zeros((size, size, 3))
  covered = np.zeros((size, size), bool)
  tex = face_uv * size - 0.5  # texel-centre coordinates
  for f in range(len(faces)):
    t = tex[f]
    x0, y0 = np.floor(t.min(0)).astype(int)
    x1, y1 = np.ceil(t.max(0)).astype(int)
    xs, ys = np.meshgrid(np.arange(max(x0, 0), min(x1, size - 1) + 1),
                         np.arange(max(y0, 0), min(y1, size - 1) + 1))  # fmt: skip
    p = np.stack([xs, ys], -1).astype(np.float64)
    (ax, ay), (bx, by), (cx, cy) = t
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if abs(area) < 1e-12 or xs.size == 0:
      continue
    w1 = ((p[..., 0] - ax) * (cy - ay) - (p[..., 1] - ay) * (cx - ax)) / area
    w2 = ((bx - ax) * (p[..., 1] - ay) - (by - ay) * (p[..., 0] - ax)) / area
    bary = np.stack([1 - w1 - w2, w1, w2], -1)
    inside = np.all(bary >= -1e-9, -1)
    yy, xx = ys[inside], xs[inside]
    b = bary[inside]
    point[yy, xx] = b @ verts[faces[f]]
    normal[yy, xx] = b @ normals[faces[f]]
    covered[yy, xx] = True
  normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
  return point, normal, covered


def _smoothstep(x, lo, hi):
  t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  return t * t * (3 - 2 * t)


def paint(verts, faces, face_uv, joints, tips, size: int = SIZE, seed: int = 0) -> np.ndarray:
  """The base skin texture [size, size, 3] uint8 of a template mesh in the canonical frame
  (metres): verts [n, 3], faces [f, 3], face_uv [f, 3, 2], joints [16, 3] (MANO order), tips
  [5, 3] (thumb, index, middle, ring, pinky). See the module docstring."""
  p, n, covered = texel_surface(verts, faces, face_uv, size)
  back = _smoothstep(n[..., 1], -0.35, 0.35)[..., None]  # 1 on the back of the hand
  color = back * BACK_TONE + (1 - back) * PALM_TONE
  shade = np.ones(p.shape[:2])
  palm = 1.0 - back[..., 0]
  for chain, tip in _CHAINS:
    pts = np.concatenate([joints[list(chain)], tips[tip][None]])
    for k in range(3):
      a, b = pts[k], pts[k + 1]
      bone = (b - a) / np.linalg.norm(b - a)
      along = (p - a) @ bone
      radial = np.linalg.norm((p - a) - along[..., None] * bone, axis=-1)
      near_bone = radial < 0.014
      # A flexion crease across the palm side of the joint at the segment's start.
      crease = np.exp(-((along / 0.0011) ** 2)) * near_bone * palm
      shade *= 1.0 - 0.22 * crease
      # Knuckle wrinkles on the back of the PIP / DIP.
      if k > 0:
        wrinkle = np.exp(-((along / 0.003) ** 2)) * near_bone * back[..., 0]
        shade *= 1.0 - 0.08 * wrinkle * (0.5 + 0.5 * np.cos(along * 2500.0))
      if k == 2:  # the nail: back of the distal segment, its last ~45%
        length = np.linalg.norm(b - a)
        frac = along / length
        dorsal = _smoothstep(n[..., 1], 0.25, 0.6)
        nail = _smoothstep(frac, 0.5, 0.6) * (frac < 1.05) * dorsal * (radial < 0.012)
        color = color * (1 - nail[..., None]) + NAIL_TONE * nail[..., None]
        shade *= 1.0 + 0.06 * nail * _smoothstep(frac, 0.92, 1.0)  # the free edge
  # The palm's transverse creases (distal, proximal) and the wrist crease.
  mcp_x = joints[[1, 4, 7, 10], 0].mean()
  for x in (0.82 * mcp_x, 0.62 * mcp_x, 0.02 * mcp_x):
    line = x + 0.004 * np.sin(p[..., 2] * 90.0)
    shade *= 1.0 - 0.18 * np.exp(-(((p[..., 0] - line) / 0.0012) ** 2)) * palm
  # Low-frequency mottling, deterministic in `seed`.
  rng = np.random.default_rng(seed)
  for _ in range(6):
    k = rng.normal(0, 60.0, 3)
    amp = rng.normal(0, 0.012, 3)
    color = color + amp * np.sin(p @ k + rng.uniform(0, 2 * np.pi))[..., None]
  img = np.clip(color * shade[..., None], 0, 1)
  # Texels outside every face take the nearest covered texel's colour (no seams when sampled).
  from scipy import ndimage

  _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
  img = img[iy, ix]
  return np.round(img * 255).astype(np.uint8)


def save(image: np.ndarray, path: pathlib.Path = PATH):
  from PIL import Image

  Image.fromarray(image).save(path, optimize=True)


def load(path: pathlib.Path = PATH) -> np.ndarray:
  """The base skin texture [h, w, 3] float32 in [0, 1]."""
  from PIL import Image

  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"skin texture not found: {path}")
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"), np.float32) / 255.0
