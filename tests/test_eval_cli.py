"""The evaluation and export command lines as a user meets them: where results go, read-only
workdirs, the feature probe's progress and reruns, mistyped workdirs, export -> import."""

import json
import os
import pathlib
import shutil
import stat

import jax
import numpy as np
import pytest

from conftest import TINY_RECIPE, run_cli, tiny_config
from vicreg_jax import export, train

TINY = [f"--config={TINY_RECIPE}"]
PROBE = ["--config.eval.linear.epochs=2"]  # the feature fast path (demo default)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A finished 2-step pretraining run of the tiny demo."""
  path = tmp_path_factory.mktemp("run")
  config = tiny_config(num_train_steps=2)
  train.train_and_evaluate(config, str(path))
  return path


cli = run_cli


def evaluate(workdir, *flags):
  return cli("vicreg_jax.evaluate", *TINY, f"--workdir={workdir}", *flags)


def one_line_error(result, *texts):
  assert result.returncode != 0, result.stdout[-2000:]
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-3000:]
  for text in texts:
    assert text in result.stderr, result.stderr


def tree(path):
  return sorted(str(p.relative_to(path)) for p in pathlib.Path(path).rglob("*"))


def test_read_only_workdir_is_refused_before_any_work_and_evaluates_into_output_dir(
    workdir, tmp_path):
  before = tree(workdir)
  modes = {p: p.stat().st_mode for p in [workdir, *workdir.rglob("*")] if p.is_dir()}
  for p in modes:
    p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
  try:
    if os.access(workdir, os.W_OK):  # root: permissions do not stop it; a file does
      (tmp_path / "file").write_text("")
      refused = evaluate(workdir, f"--output_dir={tmp_path}/file/sub")
      one_line_error(refused, f"--output_dir {tmp_path}/file/sub is not writable")
    else:
      refused = evaluate(workdir)
      one_line_error(refused, f"--output_dir {workdir}/eval is not writable")
    assert "knn:" not in refused.stdout  # refused before any protocol ran
    out = tmp_path / "results"
    done = evaluate(workdir, f"--output_dir={out}", "--protocols=knn,linear", *PROBE)
  finally:
    for p, mode in modes.items():
      p.chmod(mode)
  assert done.returncode == 0, done.stderr[-3000:]
  assert tree(workdir) == before  # the workdir is only read
  assert {"knn.json", "linear.json", "linear.jsonl"} <= set(tree(out))
  assert f"-> {out}/linear.json" in done.stdout


def test_feature_probe_reports_epochs_keeps_no_state_and_refuses_other_settings(
    workdir, tmp_path):
  out = tmp_path / "eval"
  first = evaluate(workdir, f"--output_dir={out}", "--protocols=linear", *PROBE)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "linear epoch 1/2  loss " in first.stdout and "linear epoch 2/2" in first.stdout
  progress = [json.loads(line) for line in (out / "linear.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in progress] == [1, 2] and all(r["loss"] > 0 for r in progress)
  assert tree(out) == ["linear.json", "linear.jsonl"]  # no empty linear_state/
  result = (out / "linear.json").read_text()
  assert json.loads(result)["result"]["history"] == progress
  # The same settings: recomputed (seconds), the same numbers, the progress file restarted.
  again = evaluate(workdir, f"--output_dir={out}", "--protocols=linear", *PROBE)
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((out / "linear.json").read_text())["result"] == json.loads(result)["result"]
  assert len((out / "linear.jsonl").read_text().splitlines()) == 2
  # Other settings: refused before any work, the earlier result kept.
  other = evaluate(workdir, f"--output_dir={out}", "--protocols=linear", *PROBE,
                   "--config.eval.linear.lr=0.5")
  one_line_error(other, f"{out}/linear.json holds a result made with other settings",
                 "eval.linear.lr: 0.02 -> 0.5", f"delete {out}/linear.json", "--output_dir")
  assert "linear epoch" not in other.stdout
  assert json.loads((out / "linear.json").read_text())["result"] == json.loads(result)["result"]


@pytest.mark.parametrize("module", ["vicreg_jax.evaluate", "vicreg_jax.export"])
def test_mistyped_workdir_creates_nothing_and_says_what_to_pass(module, tmp_path):
  typo = tmp_path / "rnu" / "w"
  flags = [*TINY] if module == "vicreg_jax.evaluate" else []
  result = cli(module, *flags, f"--workdir={typo}")
  one_line_error(result, f"No checkpoints in {typo}/checkpoints", "pass the --workdir of a "
                 "pretraining run")
  assert not (tmp_path / "rnu").exists()


def test_small_export_reimports_from_the_command_line(workdir, tmp_path):
  exported = tmp_path / "exp"
  result = cli("vicreg_jax.export", f"--workdir={workdir}", f"--out={exported}")
  assert result.returncode == 0, result.stderr[-3000:]
  # Every export file gets the umask's permissions (safetensors' own writer uses 0600).
  modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in exported.iterdir()}
  assert len(set(modes.values())) == 1, modes
  # Beside its backbone.json, the export's architecture is read from it (resnet18, base
  # width 4, small stem); elsewhere it is given with flags.
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(exported / "backbone.safetensors", bare / "w.safetensors")
  imports = {
      "from_json": [f"--import_weights={exported}/backbone.safetensors"],
      "from_flags": [f"--import_weights={bare}/w.safetensors", "--arch=resnet18",
                     "--base_width=4", "--small_stem"]}
  _, want = export.load_exported(str(exported))
  for name, flags in imports.items():
    result = cli("vicreg_jax.export", *flags, f"--out={tmp_path / name}")
    assert result.returncode == 0, (name, result.stderr[-3000:])
    _, got = export.load_exported(str(tmp_path / name))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  # An explicit flag wins over backbone.json.
  wrong = cli("vicreg_jax.export", *imports["from_json"], "--base_width=8",
              f"--out={tmp_path / 'wrong'}")
  one_line_error(wrong, "shape")
  assert not (tmp_path / "wrong").exists()
