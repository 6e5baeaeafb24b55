"""`--mode=prepare`: builds an experiment's dataset offline (TFDS `download_and_prepare`).

The embedded `synthetic_hands` is generated (`BUILDABLE`: the main job builds it on first use);
real datasets (`MANUAL`) are read from the user's download in `config.data.manual_dir`. The
data directory is `config.data.data_dir`, else $TFDS_DATA_DIR, else TFDS's default
(~/tensorflow_datasets). A prepared dataset is reused, not rebuilt.
"""

from __future__ import annotations

import contextlib
import io

import ml_collections
import tensorflow_datasets as tfds

from handflow.data import dexycb, freihand, hanco, ho3d, synthetic_hands

BUILDABLE = ("synthetic_hands",)
# Real benchmarks: module.builder(config.data, data_dir) over the user's download.
MANUAL_BUILDERS = {"hanco": hanco, "freihand": freihand, "dexycb": dexycb, "ho3d": ho3d}
MANUAL = tuple(MANUAL_BUILDERS)


def dataset_builder(config: ml_collections.ConfigDict):
  """The TFDS builder of `config.data` (raises ValueError for a dataset that cannot be built)."""
  name = config.data.name
  if name == "synthetic_hands":
    return synthetic_hands.builder(synthetic_hands.config_from(config.data), config.data.data_dir)
  if name in MANUAL_BUILDERS:
    return MANUAL_BUILDERS[name].builder(config.data, config.data.data_dir)
  raise ValueError(f"dataset '{name}' has no builder yet; known: {list(BUILDABLE + MANUAL)}")


def prepare(config: ml_collections.ConfigDict) -> dict:
  """Builds the dataset if needed; returns {split: number of examples} and where it is."""
  builder = dataset_builder(config)
  kw = {}
  if config.data.name in MANUAL:
    manual = config.data.get("manual_dir", "")
    if not manual and not builder.is_prepared():
      raise ValueError(
        f"dataset '{config.data.name}' is read from your download: set "
        "config.data.manual_dir to its root"
      )
    kw["download_config"] = tfds.download.DownloadConfig(manual_dir=manual or None)
  if not builder.is_prepared():
    what = "generating" if config.data.name in BUILDABLE else "preparing"
    print(f"handflow: {what} {config.data.name} in {builder.data_dir} (once)", flush=True)
  # TFDS prints its own "Downloading and preparing" lines (nothing is downloaded): hidden.
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(**kw)
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  return {"data_dir": str(builder.data_dir), "splits": splits}
