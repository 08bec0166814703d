"""ESC-50 cross-validation: one pretraining per held-out fold, its linear probe and kNN, the mean.

Usage:
  python experiments/esc50_folds.py --workdir /tmp/esc50_cv --config.data.path=/data/ESC-50
  python experiments/esc50_folds.py --workdir /tmp/esc50_cv --folds 5 \\
      --config.data.path=/data/ESC-50                        # the paper's split only
  python experiments/esc50_folds.py --workdir /tmp/esc50_cv --config.eval.branch=b ...

ESC-50 papers report top-1 on a held-out fold, or its mean over the five folds (Piczak,
ACM MM 2015); the VICReg paper reports fold 5 after training on folds 1-4. Each fold
pretrains ``--config`` (default ``configs/esc50_multimodal.py``) in ``<workdir>/fold<k>``
with ``data.test_fold=k`` (rerunning resumes an unfinished fold and rescoring a finished
one is quick), then scores the frozen encoder of ``eval.branch`` on fold ``k``. Writes
``<workdir>/table.md`` and ``<workdir>/results.json`` and prints the table with the mean
and standard deviation over the folds run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import grid  # experiments/grid.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "esc50_multimodal.py")
FOLDS = (1, 2, 3, 4, 5)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="one sub-folder per fold goes here")
  parser.add_argument("--config", default=DEFAULT_CONFIG, help="recipe[:variant]")
  parser.add_argument("--folds", default="1,2,3,4,5", help="held-out folds to run, e.g. 5")
  parser.add_argument("--steps", type=int, default=0,
                      help="pretraining steps per fold (0 = the recipe's epochs)")
  parser.add_argument("--probe_epochs", type=int, default=0,
                      help="linear-probe epochs (0 = the recipe's eval.linear.epochs)")
  args, rest = parser.parse_known_args(argv)
  overrides = grid.parse_overrides(parser, rest)
  try:
    args.folds = [int(f) for f in args.folds.split(",") if f]
  except ValueError:
    parser.error(f"--folds={args.folds!r}: comma-separated fold numbers from {FOLDS}")
  if not args.folds or set(args.folds) - set(FOLDS):
    parser.error(f"--folds={args.folds}: choose from {FOLDS}")
  if args.steps < 0 or args.probe_epochs < 0:
    parser.error("--steps and --probe_epochs must be >= 0")
  return args, overrides


def markdown_table(rows: list[dict]) -> str:
  lines = ["| held-out fold | kNN top-1 | linear top-1 | steps | wall time |", "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['fold']} | {r['knn_top1']:.1f}% | {r['linear_top1']:.1f}% | "
                 f"{r['steps']} | {r['wall_s'] / 60:.1f} min |")
  if len(rows) > 1:
    spread = lambda key: (f"{statistics.mean(r[key] for r in rows):.1f} ± "
                          f"{statistics.stdev(r[key] for r in rows):.1f}%")
    lines.append(f"| mean ± std | {spread('knn_top1')} | {spread('linear_top1')} | | |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  os.makedirs(args.workdir, exist_ok=True)
  rows = []
  for fold in args.folds:
    print(f"=== held-out fold {fold}", flush=True)
    row = grid.run_setting(args.config, {**overrides, "data.test_fold": fold},
                           os.path.join(args.workdir, f"fold{fold}"), args.steps,
                           args.probe_epochs)
    rows.append({"fold": fold, **row})
    grid.write_results(args.workdir, markdown_table(rows),
                       {"config": args.config, "config_overrides": overrides}, rows)
  print(f"\n{args.config}, branch {overrides.get('eval.branch', 'of the recipe')}\n")
  print(markdown_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  main()
