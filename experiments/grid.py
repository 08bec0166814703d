"""What the experiment grids share: ``--config.a.b=value`` overrides, one pretraining run
trained and scored in its own workdir, and the tables/results written as rows finish.

Used by ``compare_small_image_recipes.py``, ``ablations.py`` and ``esc50_folds.py`` (run them from the
repository root; this folder is on ``sys.path`` when a script in it runs).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time

# Metrics read back from a finished row's metrics.jsonl (last logged value of each).
DIAGNOSTIC_KEYS = ("representation_effective_rank", "embedding_effective_rank",
                   "representation_rank_fraction", "embedding_rank_fraction")
RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"


def literal(text: str):
  """``"0.3"`` -> 0.3, ``"True"`` -> True, anything else stays a string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_overrides(parser: argparse.ArgumentParser, rest: list[str]) -> dict:
  """``["--config.a.b=1"]`` -> ``{"a.b": 1}``; anything else is a usage error of ``parser``."""
  overrides = {}
  for item in rest:
    key, sep, value = item.partition("=")
    if not key.startswith("--config.") or not sep:
      parser.error(f"unrecognised argument {item!r}; overrides look like --config.a.b=value")
    overrides[key[len("--config."):]] = literal(value)
  return overrides


def choose(parser: argparse.ArgumentParser, only: str, names: tuple[str, ...]) -> list[str]:
  """The comma-separated subset ``only`` of ``names`` (all when empty), in the given order."""
  chosen = [n for n in only.split(",") if n] or list(names)
  unknown = sorted(set(chosen) - set(names))
  if unknown:
    parser.error(f"--only: unknown settings {unknown}; choose from {names}")
  return chosen


def last_values(workdir: str, keys: tuple[str, ...]) -> dict[str, float]:
  """The last logged value of each of ``keys`` in ``workdir``'s metrics.jsonl (NaN if never)."""
  from vicreg_jax.metrics import METRICS_FILE  # pylint: disable=g-import-not-at-top
  found = {k: float("nan") for k in keys}
  with open(os.path.join(workdir, METRICS_FILE), encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      found.update({k: float(record[k]) for k in keys if k in record})
  return found


def run_setting(spec: str, overrides: dict, workdir: str, steps: int, probe_epochs: int,
                diagnostics_every: int = 0) -> dict:
  """Pretrains one setting in ``workdir`` (resuming a checkpoint there), scores its encoder.

  Returns the row: kNN / linear top-1 (percent), the final embedding std averaged over both
  branches, the last diagnostics when ``diagnostics_every`` > 0 (effective ranks, rank
  fractions), the run's steps, whether it resumed, and the wall time (s) of this call.
  """
  # pylint: disable=g-import-not-at-top
  from vicreg_jax import checkpoint, models, train
  from vicreg_jax.config import load_config_file
  from vicreg_jax.evaluate import report
  config = load_config_file(spec, **overrides)
  if steps:
    config.num_train_steps = steps
  config.eval.compare_random = False      # only the trained encoder: the table compares rows
  config.eval.linear.on_features = True   # the feature fast path of the demo's report
  if probe_epochs:
    config.eval.linear.epochs = probe_epochs
  if diagnostics_every:
    config.eval.diagnostics_every_steps = diagnostics_every
  resumed = os.path.isdir(checkpoint.checkpoint_dir(workdir))
  start = time.perf_counter()
  result = train.train_and_evaluate(config, workdir)
  if not result.finished:
    raise SystemExit(f"{workdir} stopped at step {result.step} of {result.total_steps}; rerun "
                     "the same command to resume it.")
  branch = config.eval.branch
  if result.state is None:  # finished by an earlier call: score its last checkpoint
    from vicreg_jax.evaluate import run  # pylint: disable=g-import-not-at-top
    encoder = run.load_encoder(workdir, mesh=result.mesh, branch=branch)
    backbone, variables = encoder.backbone, encoder.variables
  else:
    backbone = models.create_backbone(config.model, branch)
    variables = models.backbone_variables(
        {"params": result.state.params, "batch_stats": result.state.batch_stats}, branch)
  scores = report.evaluate_encoder(config, result.mesh, backbone, variables)  # the run's mesh
  logged = last_values(workdir, ("std_a", "std_b", "loss")
                       + (DIAGNOSTIC_KEYS if diagnostics_every else ()))
  final_std = (logged.pop("std_a") + logged.pop("std_b")) / 2
  return {**scores, **logged, "final_std": final_std, "steps": int(result.step),
          "resumed": resumed, "wall_s": time.perf_counter() - start}


def write_results(workdir: str, table: str, header: dict, rows: list[dict]) -> None:
  """``<workdir>/table.md`` and ``<workdir>/results.json`` (``header`` + rows)."""
  with open(os.path.join(workdir, TABLE_FILE), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  with open(os.path.join(workdir, RESULTS_FILE), "w", encoding="utf-8") as f:
    json.dump({**header, "rows": rows}, f, indent=2)
