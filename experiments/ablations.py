"""The VICReg paper's ablations on your data, one command: a table and comparison plots.

Usage:
  python experiments/ablations.py --workdir /tmp/ablations                  # digits, grid "paper"
  python experiments/ablations.py --workdir /tmp/ablations --only full,no_variance --steps 100
  python experiments/ablations.py --workdir /tmp/ablations \\
      --config.data.name=npz --config.data.path=my_images.npz              # any .npz
  python experiments/ablations.py --workdir /tmp/ablations --grid smoke     # minutes, tests

Every row pretrains the same recipe (``--config``, default the README's demo) for the same
number of steps from the same seed, changing only the keys the row names (Bardes et al.,
ICLR 2022: Table 5 for shared vs separate branches, Table 7 for the loss terms, Fig. 3 /
Table 8 for the expander width and batch size; the LARS trust coefficient is the official
``main_vicreg.py`` value 1e-3 against the small-image peers' 0.02). Each row trains in its
own workdir ``<workdir>/<row>``; rerunning the command skips finished rows (their
``row.json``) and resumes an interrupted one from its last checkpoint, so a grid can be run
in pieces within a CPU budget.

Each row logs the collapse diagnostics at ``--diagnostics`` evenly spaced steps of its run
(every ``log_every_steps`` when the recipe counts epochs; effective rank, rank fraction of the representation and the embedding), kNN and
linear-probe top-1 on the labelled test split (``report.evaluate_encoder``), and the final
embedding std. A row whose final std is below ``COLLAPSED_STD`` (the variance hinge targets
1) is marked collapsed. Writes ``<workdir>/table.md``, ``<workdir>/results.json`` and the
overlaid training curves of every row (``vicreg_jax.plot``) into ``<workdir>/plots/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import grid  # experiments/grid.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "demo.py")
ROW_FILE = "row.json"
# Final embedding std (mean over dimensions and both branches) under which a row counts as
# collapsed: a tenth of the hinge's target gamma = 1. Measured on the demo recipe: full
# VICReg 0.26-0.35, without the variance term 0.02-0.03 (experiments/README.md).
COLLAPSED_STD = 0.1

# name -> (description, overrides). The demo recipe's values are the "full" row: ResNet-18
# width 8, expander 512-512-512, batch 256, coefficients 25/25/1, variance averaged over
# the branches (official), shared branches, LARS trust coefficient 0.02.
ROWS = {
    "full": ("full VICReg (25/25/1)", {}),
    "no_variance": ("no variance term (std_coeff 0)", {"loss.std_coeff": 0.0}),
    "no_covariance": ("no covariance term (cov_coeff 0)", {"loss.cov_coeff": 0.0}),
    "no_invariance": ("no invariance term (sim_coeff 0)", {"loss.sim_coeff": 0.0}),
    "variance_sum": ("variance summed over branches (paper Eq. 6)",
                     {"loss.variance_reduction": "sum"}),
    "separate_branches": ("separate branches (Table 5)", {"model.shared_branches": False}),
    "expander_128": ("expander 128-128-128", {"model.expander": "128-128-128"}),
    "expander_2048": ("expander 2048-2048-2048", {"model.expander": "2048-2048-2048"}),
    "batch_64": ("batch 64 (lr scaled by batch/256)", {"batch_size": 64}),
    "batch_128": ("batch 128 (lr scaled by batch/256)", {"batch_size": 128}),
    "trust_1e-3": ("LARS trust coefficient 1e-3 (official)", {"optim.trust_coefficient": 1e-3}),
}
# Named grids: which rows, in the order they run (full first, so a partial grid compares).
GRIDS = {
    "paper": tuple(ROWS),
    "terms": ("full", "no_variance", "no_covariance", "no_invariance", "variance_sum"),
    "smoke": ("full", "no_variance"),
}
# --grid smoke: the tests' tiny recipe, long enough for the no-variance row to collapse.
SMOKE_CONFIG = DEFAULT_CONFIG + ":tiny"
SMOKE_STEPS = 40
SMOKE_PROBE_EPOCHS = 2
DEFAULT_DIAGNOSTICS = 10  # diagnostic points per run (the effective-rank curves)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
  """Script flags, and ``--config.a.b=value`` overrides as ``{"a.b": value}`` (Python literals)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="one sub-folder per row goes here")
  parser.add_argument("--grid", default="paper", choices=sorted(GRIDS),
                      help="named set of rows (smoke: configs/demo.py:tiny, "
                      f"{SMOKE_STEPS} steps, {SMOKE_PROBE_EPOCHS} probe epochs)")
  parser.add_argument("--only", default="", help=f"comma-separated subset of {tuple(ROWS)}")
  parser.add_argument("--config", default="", help="recipe[:variant] (default: configs/demo.py, "
                      "or its tiny variant for --grid smoke)")
  parser.add_argument("--steps", type=int, default=0,
                      help="pretraining steps of every row (0 = the recipe's run length)")
  parser.add_argument("--probe_epochs", type=int, default=0,
                      help="linear-probe epochs (0 = the recipe's eval.linear.epochs)")
  parser.add_argument("--diagnostics", type=int, default=DEFAULT_DIAGNOSTICS,
                      help="collapse diagnostics at this many evenly spaced steps of each run")
  args, rest = parser.parse_known_args(argv)
  overrides = grid.parse_overrides(parser, rest)
  args.only = grid.choose(parser, args.only, GRIDS[args.grid])
  if args.steps < 0 or args.probe_epochs < 0 or args.diagnostics < 1:
    parser.error("--steps and --probe_epochs must be >= 0 and --diagnostics >= 1")
  if args.grid == "smoke":
    args.config = args.config or SMOKE_CONFIG
    args.steps = args.steps or SMOKE_STEPS
    args.probe_epochs = args.probe_epochs or SMOKE_PROBE_EPOCHS
  args.config = args.config or DEFAULT_CONFIG
  return args, overrides


def diagnostics_every(spec: str, overrides: dict, steps: int, points: int) -> int:
  """Steps between diagnostics: ``points`` evenly spaced over the run when its length is
  known (``steps`` or the recipe's ``num_train_steps``), else the recipe's
  ``log_every_steps`` (a recipe that counts epochs: the dataset decides the length)."""
  from vicreg_jax.config import load_config_file  # pylint: disable=g-import-not-at-top
  config = load_config_file(spec, **overrides)
  length = steps or config.num_train_steps
  return max(1, length // points) if length else config.log_every_steps


def markdown_table(rows: list[dict]) -> str:
  lines = ["| row | kNN top-1 | linear top-1 | final std | eff. rank repr. | eff. rank emb. "
           "| collapsed | steps | wall time |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    resumed = " (resumed)" if r["resumed"] else ""
    lines.append(
        f"| {r['description']} | {r['knn_top1']:.1f}% | {r['linear_top1']:.1f}% | "
        f"{r['final_std']:.3f} | {r['representation_effective_rank']:.1f} | "
        f"{r['embedding_effective_rank']:.1f} | {'yes' if r['collapsed'] else 'no'} | "
        f"{r['steps']} | {r['wall_s'] / 60:.1f} min{resumed} |")
  return "\n".join(lines)


def run_row(name: str, args: argparse.Namespace, overrides: dict) -> dict:
  """The row ``name``: read from its ``row.json`` when finished before, else trained/resumed."""
  workdir = os.path.join(args.workdir, name)
  saved = os.path.join(workdir, ROW_FILE)
  if os.path.isfile(saved):
    with open(saved, encoding="utf-8") as f:
      return json.load(f)
  description, setting = ROWS[name]
  every = diagnostics_every(args.config, {**overrides, **setting}, args.steps, args.diagnostics)
  row = grid.run_setting(args.config, {**overrides, **setting}, workdir, args.steps,
                         args.probe_epochs, diagnostics_every=every)
  row = {"setting": name, "description": description, "overrides": setting, **row,
         "collapsed": bool(row["final_std"] < COLLAPSED_STD)}
  with open(saved, "w", encoding="utf-8") as f:
    json.dump(row, f, indent=2)
  return row


def main(argv: list[str] | None = None) -> list[dict]:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  from vicreg_jax import plot  # pylint: disable=g-import-not-at-top
  os.makedirs(args.workdir, exist_ok=True)
  header = {"config": args.config, "grid": args.grid, "steps": args.steps,
            "config_overrides": overrides}
  rows = []
  for name in args.only:
    print(f"=== {name}: {ROWS[name][0]}", flush=True)
    rows.append(run_row(name, args, overrides))
    grid.write_results(args.workdir, markdown_table(rows), header, rows)
  out = os.path.join(args.workdir, "plots")
  written, _ = plot.plot_workdirs([os.path.join(args.workdir, r["setting"]) for r in rows], out)
  print(f"\n{args.config}, {rows[0]['steps']} steps, grid {args.grid}; plots "
        f"({', '.join(written)}) in {out}\n")
  print(markdown_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  main()
