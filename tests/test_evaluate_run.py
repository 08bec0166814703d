"""Image-level probe and fine-tuning engine, the evaluation CLI core, and weight import."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import conftest
from vicreg_jax import checkpoint, export, interop, models, optim, parallel, train
from vicreg_jax import config as config_lib
from vicreg_jax import data
from vicreg_jax.evaluate import classifier, run

NUM_CLASSES = 10


def tiny_config(**overrides):
  c = conftest.tiny_config(**overrides)
  c.eval.linear.batch_size = c.eval.finetune.batch_size = c.eval.feature_batch = 64
  return c


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  config = tiny_config(num_train_steps=2)
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.fixture(scope="module")
def encoder():
  """A small random ResNet-18 (8-px digits) and its variables."""
  backbone = models.create_backbone(tiny_config().model)
  return backbone, run.random_encoder(backbone, 0)


def leaves_equal(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_two_group_sgd_matches_torch_param_groups():
  """classifier_sgd's two rates, momentum, decay and per-epoch cosine against torch.optim."""
  rng = np.random.default_rng(0)
  params = {"backbone": {"w": rng.standard_normal(3).astype(np.float32)},
            "head": {"w": rng.standard_normal(2).astype(np.float32)}}
  grads = [{k: {"w": rng.standard_normal(v["w"].shape).astype(np.float32)}
            for k, v in params.items()} for _ in range(6)]
  tx = optim.classifier_sgd(0.5, 0.1, momentum=0.9, weight_decay=0.01, epochs=3,
                                 steps_per_epoch=2)
  state, p = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)
  tw = {k: torch.tensor(v["w"], requires_grad=True) for k, v in params.items()}
  opt = torch.optim.SGD([{"params": [tw["head"]], "lr": 0.5},
                         {"params": [tw["backbone"]], "lr": 0.1}], lr=0, momentum=0.9,
                        weight_decay=0.01)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3)
  for i, g in enumerate(grads):
    for k in tw:
      tw[k].grad = torch.tensor(g[k]["w"])
    opt.step()
    if i % 2 == 1:
      sched.step()
  for k in tw:
    np.testing.assert_allclose(p[k]["w"], tw[k].detach().numpy(), rtol=1e-5, atol=1e-6)


def train_one_epoch(backbone, variables, *, finetune_mode, backbone_lr, config):
  mesh = parallel.make_mesh()
  source = data.create_labelled_source(config, mesh, split="test", train=True,
                                       batch_size=64)
  tx = optim.classifier_sgd(0.1, backbone_lr, momentum=0.9, weight_decay=0.0, epochs=2,
                                 steps_per_epoch=source.steps_per_epoch)
  head = classifier.init_head(jax.random.key(0), classifier.representation_width(
      backbone, variables), NUM_CLASSES, 0.01)
  state = classifier.create_state(variables, head, tx, mesh)
  train_step, _ = classifier.make_steps(backbone, tx, finetune=finetune_mode,
                                        mean=config.augment.mean, std=config.augment.std,
                                        mesh=mesh)
  for batch in source.epoch(0):
    state, _ = train_step(state, batch)
  return state


@pytest.mark.parametrize("finetune_mode, backbone_lr, backbone_moves, stats_move", [
    (False, None, False, False),   # linear probe: frozen encoder, running statistics
    (True, 0.0, False, True),      # fine-tune with backbone lr 0: only BN statistics follow
    (True, 0.05, True, True),      # fine-tune: the encoder trains
])
def test_encoder_updates_only_with_a_nonzero_backbone_lr(encoder, finetune_mode, backbone_lr,
                                                         backbone_moves, stats_move):
  backbone, variables = encoder
  state = train_one_epoch(backbone, variables, finetune_mode=finetune_mode,
                          backbone_lr=backbone_lr, config=tiny_config())
  assert leaves_equal(state.params["backbone"], variables["params"]) != backbone_moves
  assert leaves_equal(state.batch_stats, variables["batch_stats"]) != stats_move
  assert not leaves_equal(state.params["head"]["kernel"], 0 * state.params["head"]["kernel"])


def test_finetune_learns_digits(encoder):
  """Real images: a short fine-tune of a random encoder beats chance (10%) by far."""
  backbone, variables = encoder
  config = tiny_config()
  config.eval.transform.crop_scale = (0.5, 1.0)  # 8-px digits: keep most of the digit
  mesh = parallel.make_mesh()
  train_source = data.create_labelled_source(config, mesh, split="train", train=True,
                                             batch_size=64)
  test_source = data.create_labelled_source(config, mesh, split="test", train=False,
                                            batch_size=64)
  tune = config.eval.finetune
  tune.epochs, tune.backbone_lr, tune.head_lr = 4, 0.2, 0.5  # measured: 70% after 4 epochs
  summary, tuned = classifier.finetune(backbone, variables, train_source, test_source, mesh=mesh,
                                       finetune_config=tune, mean=config.augment.mean,
                                       std=config.augment.std)
  assert summary["epochs"] == 4 and len(summary["history"]) == 4
  assert summary["best_top1"] >= 50, summary  # chance: 10%
  assert summary["best_top1"] == max(h["top1"] for h in summary["history"])
  assert not leaves_equal(tuned["params"], variables["params"])


def test_cli_core_writes_json_resumes_and_checks_settings(finished_run):
  config, workdir = finished_run
  config = tiny_config()
  config.eval.linear.on_features = False  # the paper's protocol on images
  config.eval.linear.epochs = 2
  config.eval.finetune.epochs = 1
  config.eval.finetune.subset_fraction = 0.1
  mesh = parallel.make_mesh()
  results = run.evaluate_workdir(config, workdir, ["knn", "linear", "finetune"], mesh=mesh)
  out = pathlib.Path(workdir) / "eval"
  for name in ("knn", "linear", "finetune"):
    record = json.loads((out / f"{name}.json").read_text())
    assert record["step"] == 2 and record["encoder"] == "pretrained"
    assert record["result"]["top1"] == results[name]["top1"]
  assert results["finetune"]["labelled_examples"] == 144
  assert (out / "finetune_export" / "backbone.safetensors").is_file()
  assert len((out / "linear.jsonl").read_text().splitlines()) == 2
  # Rerun: resumes after the saved epochs (no new progress lines), same result.
  again = run.evaluate_workdir(config, workdir, ["linear"], mesh=mesh)
  assert again["linear"]["top1"] == results["linear"]["top1"]
  assert len((out / "linear.jsonl").read_text().splitlines()) == 2
  config.eval.linear.lr = 0.5
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="other settings"):
    run.evaluate_workdir(config, workdir, ["linear"], mesh=mesh)
  with pytest.raises(ValueError, match="Unknown protocol"):
    run.evaluate_workdir(config, workdir, ["svm"], mesh=mesh)


def test_missing_workdir_and_random_baseline(finished_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoints"):
    run.load_encoder(str(tmp_path), mesh=parallel.make_mesh())
  _, workdir = finished_run
  backbone, trained, step, _ = run.load_encoder(workdir, mesh=parallel.make_mesh())
  _, random_init, _, _ = run.load_encoder(workdir, mesh=parallel.make_mesh(), random_init=True,
                                        seed=5)
  assert step == 2 and not leaves_equal(trained["params"], random_init["params"])


def encode(backbone, variables, x):
  return np.asarray(backbone.apply(variables, x, train=False))


def test_export_import_round_trip_reproduces_features(finished_run, tmp_path):
  """Workdir -> torch-layout safetensors -> imported workdir: identical features."""
  config, workdir = finished_run
  backbone, variables, _, _ = run.load_encoder(workdir, mesh=parallel.make_mesh())
  export.export_from_workdir(workdir, None, str(tmp_path / "exp"), "a", parallel.make_mesh())
  imported = str(tmp_path / "imported")
  model_config = conftest.tiny_config()
  export.import_into_workdir(str(tmp_path / "exp" / "backbone.safetensors"), model_config,
                             imported)
  back_backbone, back, step, _ = run.load_encoder(imported, mesh=parallel.make_mesh())
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8, 8, 3)), jnp.float32)
  assert step == 0
  np.testing.assert_array_equal(encode(back_backbone, back, x), encode(backbone, variables, x))
  with pytest.raises(FileExistsError, match="empty"):
    export.import_into_workdir(str(tmp_path / "exp" / "backbone.safetensors"), model_config,
                               imported)
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="imported"):
    train.train_and_evaluate(config, imported)


def test_import_with_the_wrong_architecture_or_path_fails_clearly(tmp_path):
  backbone = models.resnet("resnet18", base_width=4)
  variables = backbone.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)), train=False)
  path = str(tmp_path / "r18.safetensors")
  interop.save_safetensors(interop.flax_to_torch(variables), path)
  config = config_lib.base_config()
  config.model.arch, config.model.base_width = "resnet50", 4
  with pytest.raises(ValueError, match="resnet18|arch|shape"):
    export.import_into_workdir(path, config, str(tmp_path / "w"))
  with pytest.raises(FileNotFoundError):
    export.import_into_workdir(str(tmp_path / "missing.pth"), config, str(tmp_path / "w2"))


def test_knn_monitor_logs_the_accuracy_of_the_current_encoder(tmp_path):
  config = tiny_config(num_train_steps=2)
  config.eval.knn_every_steps = 1
  config.eval.monitor_examples = 0  # whole splits: comparable with the stand-alone kNN
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  records = [json.loads(line) for line in
             (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  knn_records = [r for r in records if "knn_top1" in r]
  assert [r["step"] for r in knn_records] == [1, 2]
  backbone, variables, _, _ = run.load_encoder(workdir, mesh=parallel.make_mesh())
  want = run.run_knn(config, parallel.make_mesh(), backbone, variables)
  assert knn_records[-1]["knn_top1"] == pytest.approx(want["top1"])
  assert knn_records[-1]["knn_top5"] == pytest.approx(want["top5"])
