"""The entry point, run as a user runs it: one-line errors, the preflight's outputs."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from etils import epath

from configs import ust
from handflow import modes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env(one_device=True):
  """The entry as a user on a CPU runs it: one device (the 8 fake devices of the test process
  make every compile an 8-way partitioning, and every eager op one more compile: 1.5x slower).
  UST-Hand's run keeps the 8 devices: the entry on a mesh, and eval in this process then
  reproduces its report exactly."""
  flags = os.environ.get("XLA_FLAGS", "").split()
  if one_device:
    flags = [f for f in flags if "device_count" not in f]
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))


def _main(*args, one_device=True):
  env = _env(one_device)
  return subprocess.run(
    [sys.executable, "-m", "handflow.main", *args],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
    # CycleHand's tiny run takes about 2 minutes on an idle 2-core CPU, over 5 on a slow one.
    timeout=900,
  )


def _error_line(r):
  lines = [ln for ln in r.stderr.splitlines() if ln.startswith("handflow: error:")]
  assert len(lines) == 1, r.stderr
  assert "Traceback" not in r.stderr, r.stderr
  return lines[0]


def test_tiny_ust_trains_reports_evaluates_and_predicts(tmp_path):
  wd = tmp_path / "wd"
  common = [f"--workdir={wd}", f"--config.data.data_dir={tmp_path / 'tfds'}"]
  r = _main("--config=configs/ust.py:tiny,K=3", "--config.seed=7", *common, one_device=False)
  assert r.returncode == 0, r.stderr[-3000:]
  cfg = json.loads((wd / "config.json").read_text())
  assert cfg["seed"] == 7 and cfg["model"]["num_hypotheses"] == 3 and cfg["variant"] == "tiny"
  summary = json.loads((wd / "hand_model.json").read_text())
  assert summary["name"] == "open_hand_right" and summary["batch"] == [8, 2]
  assert 0.16 < summary["hand_length_m"] < 0.21
  assert "synthetic_hands ready in" in r.stdout  # the embedded data is prepared on first use
  # A quiet console: no library INFO, TF's oneDNN notice, TFDS's own lines or progress bars.
  for noise in ("oneDNN", "dataset_builder.py", "Downloading and preparing", "examples/s"):
    assert noise not in r.stdout + r.stderr, noise
  assert "trained ust for 4 steps" in r.stdout and "## Test split (mm)" in r.stdout
  results = json.loads((wd / "results.json").read_text())
  for who in ("trained", "untrained"):
    for key in ("hanco/MPJPE", "hanco/MPVPE", "rootrel/PA-MPVPE"):
      assert results[who][key] > 0, (who, key)
    full = results[who]["teacher/full_hands"]  # frames the teacher triangulates whole
    assert (results[who]["teacher/hanco/MPJPE"] > 0) if full > 0 else full == 0.0, who
  for png in ("overlay.png", "training_curve.png"):
    assert (wd / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "test/overlay" in _tensorboard_tags(wd / "tb")  # beside the curves
  assert "teacher: pseudo-labels triangulated" in (wd / "results.md").read_text()
  assert "mean_hand" not in results  # UST-Hand reads no 3D label: no training mean to score
  # 3D radii chosen on validation, scored on test.
  for lv in ("50", "90"):
    assert 0.0 <= results["trained"][f"calib/3d_{lv}_conformal"] <= 1.0
    assert results["trained"][f"calib/3d_{lv}_scale"] > 0
  assert "radius chosen on validation" in (wd / "results.md").read_text()
  # eval re-reports the newest checkpoint; predict writes the test split's outputs. In this
  # process (the entry only dispatches to modes.run): one subprocess per method, not per mode.
  config = ust.get_config("tiny,K=3")
  config.seed, config.data.data_dir = 7, str(tmp_path / "tfds")
  again = modes.run("eval", config, wd)
  np.testing.assert_equal(again["trained"], results["trained"])  # NaN (no such frames) = NaN
  rewritten = json.loads((wd / "results.json").read_text())["trained"]
  np.testing.assert_equal(rewritten, results["trained"])
  modes.run("predict", config, wd)
  _predict_wrote_meshes_and_overlays(wd, config)
  _workdir_keeps_its_record(wd, config, common)
  with np.load(wd / "predictions-000.npz") as pred:
    assert sorted(pred["clip_id"].tolist()) == [0, 1]  # the 2 test clips, padding dropped
    assert pred["joints"].shape == (2, 2, 21, 3) and pred["vertices"].shape == (2, 2, 1669, 3)
    assert pred["uncertainty"].shape == (2, 2, 21) and pred["uv_mode"].shape == (2, 2, 2, 21, 2)
    assert pred["stage1_joints"].shape == (2, 2, 21, 3) and pred["uv_hypotheses"].shape[-2] == 3


def _tensorboard_tags(directory) -> set:
  import tensorflow as tf

  return {
    v.tag
    for f in directory.glob("events.out.tfevents.*")
    for e in tf.compat.v1.train.summary_iterator(str(f))
    for v in e.summary.value
  }


def _predict_wrote_meshes_and_overlays(wd, config):
  """One OBJ per test frame that a mesh reader loads with the model's vertex and face counts,
  equal to the npz's vertices; one overlay per sample frame."""
  import trimesh

  from handflow.hand import loader

  model = loader.load(config.hand.model, config.hand.side)
  objs = sorted((wd / "meshes").glob("*.obj"))
  assert [p.name for p in objs] == [f"clip{c:05d}_frame{f}.obj" for c in (0, 1) for f in (0, 1)]
  with np.load(wd / "predictions-000.npz") as pred:
    row = int(np.flatnonzero(pred["clip_id"] == 1)[0])
    want = pred["vertices"][row, 1]
  mesh = trimesh.load(objs[-1], process=False)
  assert mesh.vertices.shape == (model.num_vertices, 3)
  assert mesh.faces.shape == np.asarray(model.faces).shape
  np.testing.assert_allclose(mesh.vertices, want, atol=1e-6)
  np.testing.assert_array_equal(mesh.faces, np.asarray(model.faces))
  pngs = sorted((wd / "overlays").glob("*.png"))
  assert len(pngs) == 4 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def _workdir_keeps_its_record(wd, config, common):
  """A trained workdir: a command that changes the model is refused before anything is
  touched; eval and predict never rewrite the record; an allowed change keeps the old one."""
  from handflow import preflight

  record = (wd / "config.json").read_text()
  r = _main("--config=configs/ust.py:tiny,K=4", "--config.seed=7", *common)
  assert r.returncode == 2
  line = _error_line(r)
  assert "trained to step 4 with another config: model.num_hypotheses: 3 -> 4" in line
  assert "--config.allow_changes=model.num_hypotheses" in line
  assert (wd / "config.json").read_text() == record
  config.log_every = 1  # how the run is driven: may differ
  preflight.run(config, wd, "eval")
  assert (wd / "config.json").read_text() == record
  config.num_steps = 6
  with pytest.raises(ValueError, match="num_steps: 4 -> 6"):
    preflight.run(config, wd, "train")
  config.allow_changes = "num_steps"
  assert preflight.run(config, wd, "train")["changed"] == {"num_steps": (4, 6)}
  assert (wd / "config-4.json").read_text() == record
  assert json.loads((wd / "config.json").read_text())["num_steps"] == 6


@pytest.mark.parametrize(
  "args, match",
  [
    (["--config=configs/ust.py:bogus", "--workdir=W"], "config arg 'bogus'"),
    (
      ["--config=configs/ust.py", "--config.model.nope=3", "--workdir=W"],
      "unknown config key 'model.nope'",
    ),
    (["--config=configs/ust.py"], "--workdir"),
    (["--config=configs/missing.py", "--workdir=W"], "configs/missing.py"),
    (["--config=configs/ust.py:labels=nope", "--workdir=W"], "unknown pseudo-label preset 'nope'"),
  ],
)
def test_bad_flags_get_one_line_and_write_nothing(tmp_path, args, match):
  """Flag and config-file errors, through the entry itself (absl's parser)."""
  r = _main(*[a.replace("=W", f"={tmp_path / 'w'}") for a in args])
  assert r.returncode == 2
  assert match in _error_line(r)
  assert not (tmp_path / "w").exists()  # nothing half-written


@pytest.mark.parametrize(
  "config_arg, overrides, mode, match",
  [
    ("ust", {"hand.model": "/x/MANO_RIGHT.pkl"}, "train", "MANO file not found: /x/MANO_RIGHT.pkl"),
    ("ust", {"hand.convention": "freihand"}, "train", "names MANO vertex ids"),
    ("ust", {}, "eval", "needs a trained checkpoint"),
    ("ust:hanco", {}, "train", "ground-truth meshes are MANO's"),
    ("cyclehand", {"cycle.max_angle": 270.0}, "train", "max_angle: 270.0: degrees in (0, 180]"),
    ("cyclehand", {"loss.photo": -1.0}, "train", "loss.photo"),
    ("handmim:finetune", {"init_from.workdir": "W/pt"}, "train", "init_from = W/pt: no checkpoint"),
    ("handmim:pretrain", {"model.vit": "S"}, "train", "model.vit"),
    ("ust", {"data.views": 1}, "train", "views = 1: UST-Hand triangulates, so it needs at least 2"),
    ("ust", {}, "F/sub", "--workdir=F/sub is under F, which is a file"),
  ],
)  # fmt: skip
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, capsys, config_arg, overrides, mode,
                                                    match):  # fmt: skip
  """What the entry does after its flags (`handflow.entry.execute`), in this process: a
  subprocess per case would spend its time importing."""
  import importlib

  from handflow import entry

  (tmp_path / "f").write_text("")  # "F": a file where a directory is expected
  f = tmp_path / "f"
  sub = lambda a: (
    a.replace("W/", f"{tmp_path / 'w'}/").replace("F/", f"{f}/").replace(" F,", f" {f},")
  )
  name, _, arg = config_arg.partition(":")
  config = importlib.import_module(f"configs.{name}").get_config(arg or None)
  for key, value in overrides.items():
    node, leaf = key.rsplit(".", 1)
    config[node][leaf] = sub(value) if isinstance(value, str) else value
  workdir = tmp_path / "w"
  if mode == "F/sub":
    workdir, mode = tmp_path / "f" / "sub", "train"
  with pytest.raises(SystemExit) as exit_:
    entry.execute(config, epath.Path(workdir), mode)
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  lines = [ln for ln in err.splitlines() if ln.startswith("handflow: error:")]
  assert len(lines) == 1 and "Traceback" not in err, err
  assert sub(match) in lines[0]
  assert not (tmp_path / "w").exists()  # nothing half-written


@pytest.mark.parametrize(
  "arg, key, value, match",
  [
    ("tiny,views=-1", "", None, "config data.views = -1: expected an integer >= 1"),
    ("", "model.num_hypotheses", 0, "model.num_hypotheses = 0: UST-Hand needs at least 1"),
    ("", "batch_size", 0, "config batch_size = 0: expected an integer >= 1"),
    ("", "log_every", 0, "config log_every = 0: expected an integer >= 1"),
    ("", "data.crop_size", 256, "data.crop_size = 256 is larger than data.image_size = 128"),
  ],
)
def test_bad_values_fail_the_preflight_before_any_write(tmp_path, arg, key, value, match):
  """The preflight's checks, in process (the entry turns their ValueError into the one line
  the subprocess cases above show)."""
  from handflow import preflight

  config = ust.get_config(arg or None)
  if key:
    node, leaf = key.rsplit(".", 1) if "." in key else ("", key)
    (config[node] if node else config)[leaf] = value
  with pytest.raises(ValueError, match=re.escape(match)):
    preflight.run(config, tmp_path / "w", "train")
  assert not (tmp_path / "w").exists()


def test_workdir_must_be_a_writable_directory(tmp_path):
  from handflow import workdir

  (tmp_path / "f").write_text("")
  with pytest.raises(workdir.WorkdirError, match="is a file, not a directory"):
    workdir.check_writable(tmp_path / "f")
  with pytest.raises(workdir.WorkdirError, match=r"cannot write in /proc"):
    workdir.check_writable("/proc/handflow_workdir")  # not writable, even for root
  workdir.check_writable(tmp_path / "new" / "deeper")  # made later, by the run
  assert not (tmp_path / "new").exists()


def test_tiny_cyclehand_trains_reports_evaluates_and_predicts(tmp_path):
  wd = tmp_path / "wd"
  r = _main(
    "--config=configs/cyclehand.py:tiny",
    f"--workdir={wd}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "trained cyclehand for 4 steps" in r.stdout
  results = json.loads((wd / "results.json").read_text())
  for who in ("trained", "untrained"):
    for key in ("freihand/PA-MPJPE", "freihand/PA-MPVPE", "freihand/F@5", "freihand/F@15"):
      assert results[who][key] > 0, (who, key)
  shares = [results["trained"][f"view/{b}/share"] for b in ("0-45", "45-90", "90-135", "135-180")]
  assert sum(shares) == pytest.approx(1.0)  # every test image falls in one viewpoint bin
  assert "## By viewpoint" in (wd / "results.md").read_text()
  # The training images' mean hand, a constant scored beside the models (PA metrics only).
  assert set(results["mean_hand"]) == {"freihand/PA-MPJPE"}
  assert 0 < results["mean_hand"]["freihand/PA-MPJPE"] < 100
  assert "| training images' mean hand (constant" in (wd / "results.md").read_text()
  # The articulation the test keypoints show, ground truth and models (a collapse detector).
  assert set(results["spread"]) == {"ground truth", "trained", "untrained"}
  assert results["spread"]["ground truth"] > 1.0 and results["spread"]["untrained"] >= 0.0
  assert "## Articulation spread" in (wd / "results.md").read_text()
  for png in ("overlay.png", "training_curve.png", "cycle.png"):
    assert (wd / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(rows[0][f"loss/{k}"]) for k in ("cycle", "photo", "contrastive"))
  # predict: one row per test image (2 clips x 2 views), camera- and world-frame outputs.
  from configs import cyclehand

  config = cyclehand.get_config("tiny")
  config.data.data_dir = str(tmp_path / "tfds")
  modes.run("predict", config, wd)
  with np.load(wd / "predictions-000.npz") as pred:
    assert pred["joints"].shape == (4, 1, 21, 3) and pred["vertices_cam"].shape == (4, 1, 1669, 3)
    assert pred["view_angle"].shape == (4, 1) and sorted(pred["image_id"].tolist()) == [0, 1, 2, 3]


def test_tiny_handmim_pretrains_fine_tunes_and_compares(tmp_path):
  """The default command's three stages at the tiny size (`tests/test_stages.py` checks that a
  finished stage is reused)."""
  wd = tmp_path / "wd"
  args = (
    "--config=configs/handmim.py:tiny",
    f"--workdir={wd}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.num_steps=2",
    "--config.checkpoint.every=2",
  )
  r = _main(*args)
  assert r.returncode == 0, r.stderr[-3000:]
  for stage, method in (("pretrain", "handmim_pretrain"), ("finetune", "handmim"),
                        ("scratch", "handmim")):  # fmt: skip
    assert f"stage '{stage}' ({method}, 2 steps)" in r.stdout
    assert (wd / stage / "checkpoints" / "2").exists()
  assert f"init_from {wd}/pretrain/checkpoints/2:extra/teacher: loaded" in r.stdout
  results = json.loads((wd / "results.json").read_text())
  assert sorted(results) == ["finetune", "scratch"]
  for row in results.values():
    assert row["freihand/PA-MPVPE"] > 0 and 0 <= row["freihand/F@15"] <= 1
  pre_rows = [json.loads(x) for x in (wd / "pretrain" / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(pre_rows[0][f"loss/{k}"]) for k in ("cls", "patch", "keypoints", "pixels"))
  assert "| freihand/PA-MPVPE |" in (wd / "results.md").read_text()


def test_sigterm_mid_run_saves_says_how_to_resume_and_writes_no_report(tmp_path):
  """The entry under a real SIGTERM: a whole checkpoint, one line naming the step, exit 143, no
  final report (its unit, the loop under both signals, is `tests/test_train.py`). The 2D baseline
  is the cheapest method to compile: the entry's handling is the same for every method."""
  import signal
  import time

  wd = tmp_path / "wd"
  args = ["--config=configs/keypoints2d.py:tiny", f"--workdir={wd}",
          f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.num_steps=100000",
          "--config.checkpoint.every=3", "--config.log_every=1000"]  # fmt: skip
  env = _env()
  proc = subprocess.Popen(
    [sys.executable, "-m", "handflow.main", *args],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  t0 = time.time()
  while not (wd / "checkpoints" / "3").exists():
    assert proc.poll() is None and time.time() - t0 < 240, proc.communicate()[1][-2000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-2000:]
  line = [ln for ln in err.splitlines() if ln.startswith("handflow: stopped by SIGTERM")]
  assert len(line) == 1 and "Run the same command again to resume" in line[0], err[-2000:]
  step = int(line[0].split(" at step ")[1].split()[0])
  assert (wd / "checkpoints" / str(step)).exists() and "Traceback" not in err
  assert not (wd / "results.md").exists() and "trained keypoints2d" not in out
