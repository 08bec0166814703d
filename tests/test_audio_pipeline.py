"""Audio end to end on 8 simulated devices: splits, the view source, AdamW, a waveform <->
log-mel run that learns, resumes bit-exact, exports both encoders and is evaluated."""

import json
import shutil

import jax
import numpy as np
import pytest
import soundfile

from conftest import CONFIG_DIR, complete_steps, run_cli
from test_audio_files import write_esc50
from vicreg_jax import config as config_lib
from vicreg_jax import models, optim, parallel, train
from vicreg_jax.data import audio_source, create_view_source
from vicreg_jax.evaluate import report
from vicreg_jax.export import EXPORT_DIR, EXPORT_DIR_B, load_exported

AUDIO_RECIPE = f"{CONFIG_DIR}/audio_demo.py:tiny"
RATE = 8000
CLASSES = ("low", "high", "noise")


def synthetic_clip(cls, rng):
  """Half a second at 8 kHz: a low tone, a high tone or white noise, random level/pitch."""
  t = np.arange(RATE // 2) / RATE
  wave = {0: lambda: np.sin(2 * np.pi * rng.uniform(200, 400) * t),
          1: lambda: np.sin(2 * np.pi * rng.uniform(1500, 2500) * t),
          2: lambda: 0.6 * rng.standard_normal(t.size)}[cls]()
  return (0.5 * rng.uniform(0.3, 1.0) * wave).astype(np.float32)


def write_folder(root, per_class, splits=("train", "test")):
  rng = np.random.default_rng(0)
  for split, n in zip(splits, per_class):
    for cls, name in enumerate(CLASSES):
      folder = root / split / name if split else root / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(n):
        soundfile.write(folder / f"{i}.wav", synthetic_clip(cls, rng), RATE)
  return root


@pytest.fixture(scope="module")
def audio_data(tmp_path_factory):
  return write_folder(tmp_path_factory.mktemp("audio"), (16, 6))


def audio_config(path, **overrides):
  return config_lib.load_config_file(AUDIO_RECIPE, **{"data.path": str(path), **overrides})


def test_splits_folder_pairs_seeded_split_and_esc50_folds(tmp_path, audio_data):
  clips, labels, classes = audio_source.load_audio_split(audio_config(audio_data), "test")
  assert classes == sorted(CLASSES) and clips.shape == (18, RATE // 2)
  single = write_folder(tmp_path / "one", (10,), splits=("",))
  config = audio_config(single)
  train_clips, train_labels, _ = audio_source.load_audio_split(config, "train")
  test_clips, test_labels, _ = audio_source.load_audio_split(config, "test")
  assert np.bincount(test_labels).tolist() == [2, 2, 2]   # 20% of each class held out
  assert np.bincount(train_labels).tolist() == [8, 8, 8]
  # Disjoint: no held-out clip is also a training clip.
  assert not (test_clips[:, None, :] == train_clips[None]).all(-1).any()
  write_esc50(tmp_path / "esc")
  esc = audio_config(tmp_path / "esc", **{"data.name": "esc50", "data.test_fold": 2})
  _, test_y, names = audio_source.load_audio_split(esc, "test")
  _, train_y, _ = audio_source.load_audio_split(esc, "train")
  assert len(test_y) == 6 and len(train_y) == 24 and names == ["dog", "insects", "chainsaw"]
  with pytest.raises(ValueError, match="'train' or 'test'"):
    audio_source.load_audio_split(config, "validation")


def test_view_source_shapes_sharding_and_determinism(audio_data):
  config = audio_config(audio_data)
  mesh = parallel.make_mesh()
  source = create_view_source(config, mesh)
  assert source.num_examples == 48 and source.steps_per_epoch == 3
  first = list(zip(range(4), source.iterate(0)))[3][1]
  again = next(source.iterate(3))
  shape_a, shape_b = audio_source.view_shapes(config.audio, config.batch_size)
  for name, shape in (("view_a", shape_a), ("view_b", shape_b)):
    assert again[name].shape == shape and again[name].dtype == np.float32
    assert again[name].addressable_shards[0].data.shape[0] == config.batch_size // 8
    np.testing.assert_array_equal(first[name], again[name])  # a function of (seed, step)
  assert shape_a == (16, 2000, 1) and shape_b[1] == 16 and shape_b[3] == 1
  with pytest.raises(ValueError, match="batch_size=64 is larger than the 48 examples"):
    create_view_source(audio_config(audio_data, batch_size=64), mesh)
  with pytest.raises(ValueError, match="multiple of 8"):
    create_view_source(audio_config(audio_data, batch_size=12), mesh)


def test_adamw_first_step_matches_the_formula_and_skips_decay_on_vectors():
  cfg = config_lib.base_config().optim
  cfg.update(dict(name="adamw", base_lr=0.01, weight_decay=0.1, warmup_epochs=0))
  tx, schedule = optim.create_optimizer(cfg, global_batch=256, steps_per_epoch=10,
                                        total_steps=100)
  rng = np.random.default_rng()
  params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
  grads = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
  params32 = jax.tree.map(lambda x: x.astype(np.float32), params)
  updates, _ = tx.update(jax.tree.map(lambda x: x.astype(np.float32), grads),
                         tx.init(params32), params32)
  lr = float(schedule(0))
  # Step 1 of AdamW: bias-corrected m = g, v = g^2, so the step is -lr (g / (|g| + eps) + wd p),
  # with the decay on matrices only (biases / BN parameters excluded, as LARS excludes them).
  for name, decay in (("w", 0.1), ("b", 0.0)):
    g, p = grads[name], params[name]
    want = -lr * (g / (np.abs(g) + optim.ADAM_EPS) + decay * p)
    np.testing.assert_allclose(updates[name], want, rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="optim.name"):
    cfg.name = "sgd"
    optim.create_optimizer(cfg, global_batch=256, steps_per_epoch=10, total_steps=100)


def test_waveform_logmel_run_learns_resumes_exports_and_evaluates(tmp_path, audio_data):
  steps = {"num_train_steps": 24, "optim.warmup_epochs": 1, "log_every_steps": 4,
           "checkpoint.every_steps": 12, "optim.base_lr": 0.01}
  full = train.train_and_evaluate(audio_config(audio_data, **steps), str(tmp_path / "full"))
  losses = [json.loads(line)["loss"] for line in
            (tmp_path / "full" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
  assert len(losses) == 6 and np.isfinite(losses).all()
  assert losses[-1] < losses[0] - 1.0, losses  # the two encoders learn to agree
  # A crash after the step-12 checkpoint (its later outputs gone), then the same command:
  # it resumes at 12 and ends with the same parameters, bit for bit.
  shutil.copytree(tmp_path / "full", tmp_path / "crashed")
  shutil.rmtree(tmp_path / "crashed" / "checkpoints" / "24")
  for folder in (EXPORT_DIR, EXPORT_DIR_B):
    shutil.rmtree(tmp_path / "crashed" / folder)
  resumed = train.train_and_evaluate(audio_config(audio_data, **steps), str(tmp_path / "crashed"))
  assert complete_steps(tmp_path / "crashed")[-2:] == [12, 24]
  for a, b in zip(jax.tree.leaves(jax.device_get(full.state.params)),
                  jax.tree.leaves(jax.device_get(resumed.state.params))):
    np.testing.assert_array_equal(a, b)
  # Both encoders exported: the 1-D waveform one and the 2-D log-mel one (1 input channel).
  for folder, dims in ((EXPORT_DIR, 1), (EXPORT_DIR_B, 2)):
    backbone, variables = load_exported(str(tmp_path / "full" / folder))
    assert backbone.spatial_dims == dims and models.in_channels(variables) == 1
  # Evaluated per branch on the held-out folder: kNN and the linear probe on features.
  variables = {"params": full.state.params, "batch_stats": full.state.batch_stats}
  for branch in ("a", "b"):
    config = audio_config(audio_data, **{"eval.branch": branch})
    scores = report.compare_with_random_init(config, str(tmp_path / "full"), variables,
                                             full.mesh)["VICReg-pretrained"]
    assert 100 / 3 <= scores["knn_top1"] <= 100, (branch, scores)  # 3 easy classes
  # The command lines on the same workdir: evaluate the log-mel encoder, export it.
  flags = [f"--config={AUDIO_RECIPE}", f"--config.data.path={audio_data}",
           f"--workdir={tmp_path / 'full'}"]
  evaluated = run_cli("vicreg_jax.evaluate", *flags, "--protocols=knn,linear",
                      "--config.eval.branch=b", devices=2)
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  linear = json.loads((tmp_path / "full" / "eval" / "linear.json").read_text())
  assert linear["settings"]["eval"]["branch"] == "b" and 0 <= linear["result"]["top1"] <= 100
  refused = run_cli("vicreg_jax.evaluate", *flags, "--protocols=finetune")
  assert refused.returncode != 0 and "--protocols=knn,linear" in refused.stderr
  exported = run_cli("vicreg_jax.export", f"--workdir={tmp_path / 'full'}", "--branch=b",
                     f"--out={tmp_path / 'cli_export'}")
  assert exported.returncode == 0, exported.stderr[-2000:]
  backbone, _ = load_exported(str(tmp_path / "cli_export"))
  assert backbone.spatial_dims == 2


@pytest.mark.parametrize("overrides, match", [
    ({"model.shared_branches": True, "model.branch_b.spatial_dims": None}, "shared_branches=False"),
    ({"model.spatial_dims": 2}, "model.spatial_dims=1"),
    ({"eval.knn_every_steps": 5}, "knn_every_steps=0"),
    ({"data.name": "digits"}, "esc50|folder"),
])
def test_audio_config_mismatches_are_refused_before_compiling(overrides, match):
  config = audio_config("/data/audio", **overrides)
  with pytest.raises(ValueError, match=match):
    config_lib.validate(config)


def test_missing_audio_folder_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    audio_source.load_audio_split(audio_config(tmp_path / "nope"), "train")
  with pytest.raises(FileNotFoundError, match="meta/esc50.csv"):
    audio_source.load_audio_split(audio_config(tmp_path, **{"data.name": "esc50"}), "train")


def test_esc50_cross_validation_script_runs_a_fold_and_averages(tmp_path, capsys):
  from conftest import load_experiment  # pylint: disable=g-import-not-at-top
  script = load_experiment("esc50_folds")
  write_esc50(tmp_path / "esc")
  # One fold (the recipe's shapes, so the step comes from the compilation cache).
  rows = script.main(["--workdir", str(tmp_path / "cv"), "--config", AUDIO_RECIPE,
                      "--folds", "5", "--steps", "2", "--probe_epochs", "1",
                      "--config.data.name=esc50", f"--config.data.path={tmp_path / 'esc'}"])
  assert [r["fold"] for r in rows] == [5] and rows[0]["steps"] == 2
  assert 0 <= rows[0]["knn_top1"] <= 100 and 0 <= rows[0]["linear_top1"] <= 100
  assert (tmp_path / "cv" / "fold5" / "export_b").is_dir()
  assert (tmp_path / "cv" / "table.md").read_text().strip() in capsys.readouterr().out
  # Several folds: a mean and a spread row.
  fake = [{"fold": k, "knn_top1": 50.0 + k, "linear_top1": 60.0 + 2 * k, "steps": 1,
           "wall_s": 60.0} for k in (1, 2, 3)]
  assert "| mean ± std | 52.0 ± 1.0% | 64.0 ± 2.0% | | |" in script.markdown_table(fake)
  for bad in ("6", "x", ""):
    with pytest.raises(SystemExit):
      script.parse_args(["--workdir", "w", "--folds", bad])
