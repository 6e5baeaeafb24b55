"""`--mode=prepare`: builds an experiment's dataset offline (TFDS `download_and_prepare`).

The embedded `synthetic_hands` is generated; real datasets (issue 7) will read the user's
`manual_dir`. The data directory is `config.data.data_dir`, else $TFDS_DATA_DIR, else TFDS's
default (~/tensorflow_datasets). A prepared dataset is reused, not rebuilt.
"""

from __future__ import annotations

import ml_collections

from handflow.data import synthetic_hands

BUILDABLE = ("synthetic_hands",)


def dataset_builder(config: ml_collections.ConfigDict):
  """The TFDS builder of `config.data` (raises ValueError for a dataset that cannot be built)."""
  name = config.data.name
  if name == "synthetic_hands":
    return synthetic_hands.builder(synthetic_hands.config_from(config.data), config.data.data_dir)
  raise ValueError(f"dataset '{name}' has no builder yet; buildable here: {list(BUILDABLE)}")


def prepare(config: ml_collections.ConfigDict) -> dict:
  """Builds the dataset if needed; returns {split: number of examples} and where it is."""
  builder = dataset_builder(config)
  builder.download_and_prepare()
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  return {"data_dir": str(builder.data_dir), "splits": splits}
