"""Fine-tuning across models: a checkpoint of model A loaded into model B with another head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import checkpoint, finetune, train
from handflow.methods.base import MethodBase
from tests import train_helper as th


class Backbone(MethodBase):
  """features = tanh(x W), y = features . head: a "backbone" and a "head", as nested dicts.
  `head_width` > 1 gives model B a head of another shape; `encoder` renames the backbone."""

  name = "tree"

  def __init__(self, head_width=1, encoder="backbone", extra_head=False):
    self.head_width, self.encoder, self.extra_head = head_width, encoder, extra_head

  def init(self, rng, batch):
    r1, r2 = jax.random.split(rng)
    d = batch["x"].shape[-1]
    p = {
      self.encoder: {"dense": {"kernel": jax.random.normal(r1, (d, 8)) * 0.3}},
      "head": {"kernel": jax.random.normal(r2, (8, self.head_width)) * 0.1},
    }
    if self.extra_head:
      p["aux_head"] = {"bias": jnp.zeros((3,))}
    return p, {}

  def predict(self, params, extra, batch):
    del extra
    f = jnp.tanh(batch["x"] @ params[self.encoder]["dense"]["kernel"])
    return {"y": (f @ params["head"]["kernel"]).mean(-1)}

  def loss_fn(self, params, extra, batch, rng, step):
    del rng, step
    err = (self.predict(params, extra, batch)["y"] - batch["y"]) ** 2
    loss = jnp.sum(err * batch["mask"]) / jnp.sum(batch["mask"])
    return loss, ({"mse": loss}, None)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
  wd = tmp_path_factory.mktemp("a")
  state = train.train_and_evaluate(th.config(6), wd, Backbone(), th.batches)
  return wd, jax.device_get(state.params)


def _init_b(method):
  params, _ = method.init(jax.random.key(5), next(th.batches(0)))
  return jax.device_get(params)


def test_matching_paths_load_a_new_head_stays_fresh(run_a):
  wd, a = run_a
  b_method = Backbone(head_width=3, extra_head=True)
  fresh = _init_b(b_method)
  cfg = th.config(3, init_from={"workdir": str(wd), "dont_load": ["head/.*"]})
  params, report = finetune.load_pretrained(cfg, b_method, fresh)
  assert report.loaded == ["backbone/dense/kernel"]
  assert report.skipped == ["head/kernel"] and report.fresh == ["aux_head/bias"]
  assert report.unused == ["head/kernel"]  # A's head: read by nobody
  np.testing.assert_array_equal(
    params["backbone"]["dense"]["kernel"], a["backbone"]["dense"]["kernel"]
  )
  np.testing.assert_array_equal(params["head"]["kernel"], fresh["head"]["kernel"])
  line = report.line()
  assert "loaded 1 parameter arrays" in line and "skipped 1 (dont_load) (head/kernel)" in line
  assert "fresh 1" in line and str(wd) in line


def test_a_shape_mismatch_names_the_path(run_a):
  wd, _ = run_a
  b_method = Backbone(head_width=3)
  cfg = th.config(3, init_from={"workdir": str(wd)})
  with pytest.raises(finetune.FinetuneError, match=r"'head/kernel' has shape \(8, 1\) .* \(8, 3\)"):
    finetune.load_pretrained(cfg, b_method, _init_b(b_method))


def test_rename_reads_another_path(run_a):
  wd, a = run_a
  b_method = Backbone(encoder="encoder")
  cfg = th.config(3, init_from={"workdir": str(wd), "rename": [("encoder/(.*)", r"backbone/\1")]})
  params, report = finetune.load_pretrained(cfg, b_method, _init_b(b_method))
  assert sorted(report.loaded) == ["encoder/dense/kernel", "head/kernel"] and not report.unused
  np.testing.assert_array_equal(
    params["encoder"]["dense"]["kernel"], a["backbone"]["dense"]["kernel"]
  )


def test_fine_tuning_run_starts_from_the_loaded_backbone(run_a, tmp_path, capsys):
  wd, a = run_a
  b_method = Backbone(head_width=2)
  cfg = th.config(3, init_from={"workdir": str(wd), "dont_load": ["head/.*"]})
  cfg.optim.learning_rate = 1e-6  # nearly still: the start is what is checked
  state = train.train_and_evaluate(cfg, tmp_path / "b", b_method, th.batches)
  assert int(state.step) == 3
  got = np.asarray(state.params["backbone"]["dense"]["kernel"])
  np.testing.assert_allclose(got, a["backbone"]["dense"]["kernel"], atol=1e-4)
  assert "init_from" in capsys.readouterr().out
  with pytest.raises(checkpoint.CheckpointError, match="init_from.tree = 'extra/teacher'"):
    finetune.load_pretrained(
      th.config(2, init_from={"workdir": str(wd), "tree": "extra/teacher"}), b_method, got
    )
