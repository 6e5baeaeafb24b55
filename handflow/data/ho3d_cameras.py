"""HO-3D v3's multi-camera sequences as synchronised multi-view clips (used by `ho3d`).

Some v3 scenes were filmed by several cameras at once: sequence `{group}{c}` is camera c of
group `group` (e.g. ABF10 ... ABF14), and frames with the same id are simultaneous. The
calibration, as HO3D's own multi-camera code reads it:

  calibration/{group}/calibration/cam_orders.txt     the camera ids c, in calibration order i
  calibration/{group}/calibration/trans_{i}.txt      4 x 4: camera i's (OpenCV) points -> the
                                                     group's common frame, metres

Each camera's labels are in its own OpenGL frame; mapped to the common frame they must agree
(`manual.fuse_views`: a wrong convention or unsynchronised frames is an error naming them).
"""

from __future__ import annotations

import pathlib

import numpy as np

from handflow.data import manual


def camera_groups(root: pathlib.Path, error) -> dict[str, list[tuple[str, np.ndarray]]]:
  """{group: [(sequence name, T_world_cam [4, 4])] in calibration order} of the calibrated
  multi-camera groups under `calibration/`."""
  out = {}
  for orders in sorted(pathlib.Path(root).glob("calibration/*/calibration/cam_orders.txt")):
    group = orders.parent.parent.name
    try:
      cams = [int(c) for c in np.atleast_1d(np.loadtxt(orders))]
    except ValueError as e:
      raise error(f"HO3D: malformed {orders}: {e}") from None
    views = []
    for i, cam in enumerate(cams):
      path = orders.parent / f"trans_{i}.txt"
      if not path.is_file():
        raise error(f"HO3D: missing file {path}")
      try:
        T = np.loadtxt(path)
      except ValueError as e:
        raise error(f"HO3D: malformed {path}: {e}") from None
      T = manual.array(T, (4, 4), path, "trans", "HO3D", error)
      if not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(
        T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-4
      ):
        raise error(f"HO3D: {path} is not a rigid 4 x 4 transform")
      views.append((f"{group}{cam}", T))
    out[group] = views
  return out


def windows(entries, cameras, t: int, keep) -> list[list[int]]:
  """Clips of t consecutive frame ids listed for every camera's sequence and kept by
  `keep(sequence, frame)` in all of them."""
  listed = {}
  for seq, frame in entries:
    listed.setdefault(seq, set()).add(frame)
  common = set.intersection(*(listed.get(seq, set()) for seq, _ in cameras))
  frames = [f for f in sorted(common) if all(keep(seq, f) for seq, _ in cameras)]
  return manual.clips_of(frames, t)
