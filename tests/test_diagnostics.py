"""Collapse diagnostics against a float64 NumPy reference, and their logging in the loop."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vicreg_jax import config as config_lib, diagnostics, train

THRESHOLD = 1e-3


def reference(x, weight):
  """float64 NumPy transcription of the definitions (SVD, corrcoef, ddof=1 std)."""
  real = np.asarray(x, np.float64)[np.asarray(weight) > 0]
  centred = real - real.mean(axis=0)
  s = np.linalg.svd(centred, compute_uv=False)
  p = s / s.sum()
  p = p[p > 0]
  corr = np.corrcoef(real, rowvar=False)
  d = corr.shape[0]
  return {"effective_rank": np.exp(-np.sum(p * np.log(p))),
          "rank_fraction": np.sum(s > THRESHOLD * s[0]) / min(len(real) - 1, d),
          "mean_abs_corr": (np.abs(corr).sum() - d) / (d * (d - 1)),
          "std": real.std(axis=0, ddof=1).mean(),
          "spectrum": s / s.sum()}


@pytest.mark.parametrize("n,d,rank", [(24, 10, 10), (16, 40, 3), (32, 32, 1)])
def test_diagnostics_match_the_float64_reference_with_padding_rows(n, d, rank):
  rng = np.random.default_rng()
  x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + rng.normal(size=(1, d))
  x[-4:] = 1e3 * rng.normal(size=(4, d))  # padding rows: must not count
  weight = np.r_[np.ones(n - 4), np.zeros(4)]
  got = diagnostics.diagnose(jnp.asarray(x, jnp.float32), jnp.asarray(weight), THRESHOLD)
  want = reference(x, weight)
  for key in ("effective_rank", "mean_abs_corr", "std"):
    np.testing.assert_allclose(float(got[key]), want[key], rtol=2e-4, err_msg=key)
  assert float(got["rank_fraction"]) == pytest.approx(want["rank_fraction"])
  assert float(got["rank_fraction"]) == pytest.approx(min(rank, d) / min(n - 5, d))
  spectrum = np.asarray(got["spectrum"])
  np.testing.assert_allclose(spectrum[:len(want["spectrum"])], want["spectrum"], atol=2e-5)
  assert np.all(np.diff(spectrum) <= 1e-7) and spectrum.sum() == pytest.approx(1, rel=1e-5)


def test_collapsed_and_healthy_batches_are_told_apart():
  rng = np.random.default_rng()
  ones = jnp.ones((64,))
  healthy = diagnostics.diagnose(jnp.asarray(rng.normal(size=(64, 16)), jnp.float32), ones,
                                 THRESHOLD)
  line = rng.normal(size=(64, 1)) * rng.normal(size=(1, 16))  # dimensional collapse
  dimensional = diagnostics.diagnose(jnp.asarray(line, jnp.float32), ones, THRESHOLD)
  point = diagnostics.diagnose(jnp.zeros((64, 16)), ones, THRESHOLD)  # complete collapse
  assert float(healthy["effective_rank"]) > 12 and float(healthy["rank_fraction"]) == 1
  assert float(healthy["mean_abs_corr"]) < 0.2
  assert float(dimensional["effective_rank"]) == pytest.approx(1, abs=1e-3)
  assert float(dimensional["rank_fraction"]) == pytest.approx(1 / 16)
  assert float(dimensional["mean_abs_corr"]) == pytest.approx(1, abs=1e-4)
  assert float(point["std"]) == 0 and float(point["rank_fraction"]) == 0
  assert np.isfinite(float(point["effective_rank"]))


def test_training_logs_diagnostics_and_the_last_spectra(tmp_path):
  config = tiny_config(**{"num_train_steps": 4, "eval.diagnostics_every_steps": 2,
                          "eval.diagnostics_examples": 64})
  train.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  logged = [l for l in lines if "embedding_effective_rank" in l]
  assert [l["step"] for l in logged] == [2, 4]
  for line in logged:
    for name in ("representation", "embedding"):
      assert 1 <= line[f"{name}_effective_rank"] <= 64
      assert 0 < line[f"{name}_rank_fraction"] <= 1 and line[f"{name}_std"] > 0
      assert 0 <= line[f"{name}_mean_abs_corr"] <= 1
  spectra = json.loads((tmp_path / "spectra.json").read_text())
  assert spectra["step"] == 4 and len(spectra["embedding"]) == 32  # min(64 examples, width 32)
  assert sum(spectra["representation"]) == pytest.approx(1, rel=1e-4)


@pytest.mark.parametrize("key,value", [("every_steps", -1), ("examples", 1), ("threshold", 0)])
def test_diagnostics_settings_are_validated(key, value):
  config = tiny_config(**{f"eval.diagnostics_{key}": value})
  with pytest.raises(ValueError, match=f"diagnostics_{key}"):
    config_lib.validate(config)
