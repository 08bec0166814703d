"""Recipe files load, validate, and invalid values are rejected with the key to fix."""

import pathlib
import re

import pytest

from vicreg_jax import config as config_lib

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load(name: str, variant: str = ""):
  return config_lib.load_config_file(f"{CONFIG_DIR / name}.py" + (f":{variant}" if variant else ""))


@pytest.mark.parametrize("name,variant", [
    ("imagenet_resnet50", ""), ("imagenet_resnet50", "ep100"), ("cifar10_resnet18", ""),
    ("demo", ""), ("demo", "tiny")])
def test_recipes_validate(name, variant):
  config_lib.validate(load(name, variant))


def test_paper_recipe_numbers():
  c = load("imagenet_resnet50")
  assert (c.epochs, c.batch_size, c.optim.base_lr, c.model.expander) == (
      1000, 2048, 0.2, "8192-8192-8192")
  assert (c.loss.sim_coeff, c.loss.std_coeff, c.loss.cov_coeff) == (25.0, 25.0, 1.0)
  assert load("imagenet_resnet50", "ep100").optim.base_lr == 0.3
  assert c.augment.view_a.blur_prob == 1.0 and c.augment.view_b.solarize_prob == 0.2


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match="Unknown variant"):
    load("demo", "huge")


@pytest.mark.parametrize("key,value,match", [
    ("batch_size", 1, "batch_size"),
    ("nonfinite", "ignore", "nonfinite"),
    ("data.source", "s3", "data.source"),
    ("loss.cov_method", "svd", "cov_method"),
    ("augment.view_b.blur_prob", 1.5, "blur_prob"),
    ("eval.knn_every_steps", -1, "knn_every_steps"),
    ("eval.finetune.subset_fraction", 0.0, "subset_fraction"),
    ("eval.linear.epochs", 0, "eval.linear.epochs"),
    ("eval.transform.train_crop", "center", "train_crop"),
    ("eval.transform.resize_size", 8, "resize_size"),
    ("optim.base_lr", -0.1, "optim.base_lr"),
    ("optim.base_lr", float("nan"), "optim.base_lr"),
    ("optim.weight_decay", -1e-6, "optim.weight_decay"),
    ("optim.momentum", 1.0, "optim.momentum"),
    ("optim.trust_coefficient", 0.0, "trust_coefficient"),
    ("optim.end_lr_ratio", 2.0, "end_lr_ratio"),
    ("epochs", -5, "config.epochs"),
    ("num_train_steps", -1, "num_train_steps"),
    ("model.base_width", 0, "base_width"),
    ("model.width_multiplier", 0, "width_multiplier"),
    ("model.view_batching", "always", "model.view_batching"),
    ("loss.std_coeff", -25.0, "std_coeff"),
    ("loss.eps", 0.0, "loss.eps"),
    ("eval.linear.lr", 0.0, "eval.linear.lr"),
    ("eval.finetune.backbone_lr", -0.01, "backbone_lr"),
    ("eval.linear.momentum", 1.5, "eval.linear.momentum"),
])
def test_invalid_values_name_the_key(key, value, match):
  c = config_lib.load_config_file(f"{CONFIG_DIR / 'demo'}.py", **{key: value})
  with pytest.raises(ValueError, match=match):
    config_lib.validate(c)


@pytest.mark.parametrize("key, match", [
    ("loss.std_cof", r"no key 'std_cof'.*std_coeff"),     # a typo: the close names
    ("nope.a", r"no key 'nope'.*'optim'"),                 # no close name: all of them
    ("loss.std_coeff.x", "loss.std_coeff is a value"),     # a value used as a group
])
def test_override_of_a_missing_key_is_refused(key, match):
  # Setting it would add a key nothing reads: the run would silently ignore the override.
  with pytest.raises(KeyError, match=match):
    config_lib.load_config_file(f"{CONFIG_DIR / 'demo'}.py", **{key: 1.0})


def test_missing_config_file_is_named():
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_lib.load_config_file("configs/nope.py")


# The labelled held-out split of each dataset the recipes use (tfds catalog: imagenet2012
# train / validation labelled, test labels all -1; cifar10 train / test; our digits split).
LABELLED_SPLITS = {"imagenet2012": {"train", "validation"}, "cifar10": {"train", "test"},
                   "digits": {"train", "test"}}


@pytest.mark.parametrize("name,variant", [
    ("imagenet_resnet50", ""), ("imagenet_resnet50", "ep100"), ("cifar10_resnet18", ""),
    ("demo", ""), ("demo", "tiny")])
def test_recipes_evaluate_on_labelled_splits(name, variant):
  c = load(name, variant)
  assert {c.eval.train_split, c.eval.split} <= LABELLED_SPLITS[c.data.name]
  assert c.eval.split != c.eval.train_split


@pytest.mark.parametrize("key", ["split", "train_split"])
def test_an_unlabelled_evaluation_split_is_refused_naming_the_one_to_use(key):
  c = load("imagenet_resnet50", "ep100")
  c.eval[key] = "test"
  with pytest.raises(ValueError, match=f"eval.{key}=validation"):
    config_lib.validate(c)


# Paper App. C.4 / Table 13: base learning rate per batch size for the 100-epoch runs.
PAPER_100_EPOCH_BASE_LR = {128: 0.8, 256: 0.5, 512: 0.4, 1024: 0.3, 2048: 0.3, 4096: 0.3}


def test_imagenet_learning_rates_are_the_papers_for_their_run_length():
  assert config_lib.base_config().epochs == 100
  for c in (config_lib.base_config(), load("imagenet_resnet50", "ep100")):
    assert c.optim.base_lr == PAPER_100_EPOCH_BASE_LR[c.batch_size]
  full = load("imagenet_resnet50")
  assert (full.epochs, full.batch_size, full.optim.base_lr) == (1000, 2048, 0.2)  # Sec. 4.2


@pytest.mark.parametrize("name", ["cifar10_resnet18", "demo"])
def test_small_image_recipes_use_the_small_image_lars(name):
  """solo-learn's CIFAR LARS (scripts/pretrain/cifar/vicreg.yaml), not the ImageNet values:
  measured faster on small images (experiments/compare_small_image_recipes.py)."""
  optim = load(name).optim
  assert (optim.base_lr, optim.trust_coefficient, optim.weight_decay) == (0.3, 0.02, 1e-4)
  assert load(name).batch_size == 256  # the batch the peer's lr 0.3 refers to


def test_imagenet_recipe_keeps_the_official_lars():
  for variant in ("", "ep100"):
    optim = load("imagenet_resnet50", variant).optim
    assert (optim.trust_coefficient, optim.weight_decay) == (1e-3, 1e-6)


@pytest.mark.parametrize("overrides, key", [
    ({"model.shared_branches": False, "model.branch_b.spatial_dims": 1},
     "model.branch_b.spatial_dims"),
    ({"model.spatial_dims": 1}, "model.spatial_dims"),
    ({"model.spatial_dims": 3}, "model.spatial_dims"),
])
def test_one_dimensional_encoder_on_image_data_is_refused_before_compiling(overrides, key):
  c = config_lib.load_config_file(f"{CONFIG_DIR / 'demo'}.py", **overrides)
  with pytest.raises(ValueError, match=rf"--config\.{re.escape(key)}=\d.*(2|images)"):
    config_lib.validate(c)
  # The two-dimensional setting of the same key passes.
  config_lib.validate(config_lib.load_config_file(f"{CONFIG_DIR / 'demo'}.py",
                                                  **{**overrides, key: 2}))
