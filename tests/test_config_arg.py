import pytest

from configs import ust
from handflow import config_arg


def test_parse_variant_keys_and_flags():
  a = config_arg.parse("hanco,K=32,flag", variants=("default", "hanco"), K=16, flag=False, x=1.5)
  assert (a.variant, a.K, a.flag, a.x) == ("hanco", 32, True, 1.5)
  assert config_arg.parse(None, variants=("default",), K=1).variant == "default"
  assert config_arg.parse("flag=false", variants=("d",), flag=True).flag is False


@pytest.mark.parametrize(
  "arg, match",
  [
    ("nope", "not a variant"),
    ("K=abc", "'K=abc': expected int"),
    ("Q=1", "'Q': unknown key"),
    ("flag=maybe", "expected a boolean"),
    ("a,b", "more than one variant"),
    ("variant=zzz", "unknown variant"),
  ],
)
def test_parse_errors_name_the_token(arg, match):
  with pytest.raises(ValueError, match=match):
    config_arg.parse(arg, variants=("a", "b"), K=16, flag=False)


def test_ust_variants():
  assert ust.get_config().data.name == "synthetic_hands"
  tiny = ust.get_config("tiny")
  assert tiny.data.image_size <= 64 and tiny.batch_size <= 8 and tiny.num_steps <= 10
  assert ust.get_config("tiny,K=3").model.num_hypotheses == 3  # arg keys beat the variant
  for v in ("hanco", "dexycb", "ho3d"):
    c = ust.get_config(v)
    assert c.data.name == v and c.data.crop_size == 256 and c.model.backbone_depth == 50
  assert ust.get_config("flow=false,views=4").model.head == "laplace"
  assert ust.get_config("head=l1").model.head == "l1"
  assert ust.get_config("views=4").data.views == 4
