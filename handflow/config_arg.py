"""Parses the argument of `get_config(arg)`: `configs/ust.py:hanco,K=32,no_temporal`.

big_vision style: comma-separated tokens; `key=value` sets a typed field (the type of its
default), a bare word is the variant if it names one, otherwise a boolean flag set to True.
Unknown keys, unknown variants and values of the wrong type raise a ValueError naming them.
"""

from __future__ import annotations

import ml_collections

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _cast(key: str, value: str, default):
  if isinstance(default, bool):
    low = value.lower()
    if low in _TRUE | _FALSE:
      return low in _TRUE
    raise ValueError(f"config arg '{key}={value}': expected a boolean")
  try:
    return type(default)(value) if default is not None else value
  except ValueError:
    raise ValueError(f"config arg '{key}={value}': expected {type(default).__name__}") from None


def parse(arg: str | None, *, variants: tuple[str, ...], **defaults) -> ml_collections.ConfigDict:
  """Returns a locked ConfigDict with `variant` (the first of `variants` if none is given)."""
  out = dict(defaults, variant=variants[0])
  seen_variant = False
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    key, eq, value = token.partition("=")
    if not eq:
      if key in variants:
        if seen_variant:
          raise ValueError(f"config arg '{arg}': more than one variant given")
        out["variant"], seen_variant = key, True
        continue
      if key not in defaults:
        raise ValueError(
          f"config arg '{key}': not a variant {list(variants)} nor a known key {sorted(defaults)}"
        )
      value = "true"
    if key == "variant":
      if value not in variants:
        raise ValueError(f"config arg 'variant={value}': unknown variant; known: {list(variants)}")
      out["variant"] = value
      continue
    if key not in defaults:
      raise ValueError(f"config arg '{key}': unknown key; known: {sorted(defaults)}")
    out[key] = _cast(key, value, defaults[key])
  cfg = ml_collections.ConfigDict(out)
  cfg.lock()
  return cfg
