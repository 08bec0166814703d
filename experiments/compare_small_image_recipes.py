"""Small-image optimiser recipes side by side: ours (ImageNet LARS values) vs solo-learn's.

Usage:
  python experiments/compare_small_image_recipes.py --workdir /tmp/recipes          # digits, 300 steps
  python experiments/compare_small_image_recipes.py --workdir /tmp/recipes --steps 100 \
      --only current,peer
  python experiments/compare_small_image_recipes.py --workdir /tmp/recipes \
      --config.data.name=npz --config.data.path=my_images.npz
  python experiments/compare_small_image_recipes.py --workdir /tmp/smoke --smoke    # seconds

Every setting pretrains the same recipe (``--config``, default the README's demo) for the
same number of steps from the same seed, each in its own workdir ``<workdir>/<setting>``
(a workdir that already exists is refused: the runs are never resumed or mixed), through
the library's ``train.train_and_evaluate``; then the trained encoder goes through the demo
report's ``report.evaluate_encoder`` (kNN, and the linear probe on features extracted once).
Only ``config.optim`` / ``config.augment`` values differ between rows; the settings are
spelled out below, not read from the recipe, so the "current" row stays the pre-change
recipe whatever ``configs/demo.py`` says now.

Prints a Markdown table (setting, kNN top-1, linear top-1, final std of the embeddings
averaged over both branches, wall time of pretraining + evaluation) and writes it with the
per-row numbers to ``<workdir>/table.md`` and ``<workdir>/results.json`` as rows finish.
"""

from __future__ import annotations

import argparse
import os
import sys

import grid  # experiments/grid.py

# The ImageNet LARS values the small-image recipes used before (official main_vicreg.py:
# trust coefficient 1e-3, weight decay 1e-6; base lr 0.5 = the paper's App. C.4 value for
# batch 256).
CURRENT = {"optim.base_lr": 0.5, "optim.trust_coefficient": 1e-3, "optim.weight_decay": 1e-6}
# solo-learn scripts/pretrain/cifar/vicreg.yaml: LARS lr 0.3 at batch 256, eta 0.02, wd 1e-4.
PEER = {"optim.base_lr": 0.3, "optim.trust_coefficient": 0.02, "optim.weight_decay": 1e-4}
# solo-learn's augmentation: solarization p 0.1 on both views (ours: 0.0 / 0.2).
PEER_SOLARIZE = {"augment.view_a.solarize_prob": 0.1, "augment.view_b.solarize_prob": 0.1}

# (name, description, overrides), in the order they run: the two recipes first, so a run
# stopped part-way still compares them.
SETTINGS = (
    ("current", "ours before: lr 0.5, eta 1e-3, wd 1e-6", CURRENT),
    ("peer", "solo-learn: lr 0.3, eta 0.02, wd 1e-4", PEER),
    ("eta_wd", "eta 0.02 + wd 1e-4, lr 0.5", {**CURRENT, "optim.trust_coefficient": 0.02,
                                              "optim.weight_decay": 1e-4}),
    ("eta", "eta 0.02 alone (lr 0.5, wd 1e-6)", {**CURRENT, "optim.trust_coefficient": 0.02}),
    ("wd", "wd 1e-4 alone (lr 0.5, eta 1e-3)", {**CURRENT, "optim.weight_decay": 1e-4}),
    ("peer_solarize", "solo-learn + solarize 0.1 on both views", {**PEER, **PEER_SOLARIZE}),
)
SETTING_NAMES = tuple(name for name, _, _ in SETTINGS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "demo.py")
# --smoke: the tests' tiny recipe, a few steps and a short probe.
SMOKE_CONFIG = DEFAULT_CONFIG + ":tiny"
SMOKE_STEPS = 2
SMOKE_PROBE_EPOCHS = 1


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
  """Script flags, and ``--config.a.b=value`` overrides as ``{"a.b": value}`` (Python literals)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="one sub-folder per setting goes here")
  parser.add_argument("--config", default=DEFAULT_CONFIG, help="recipe[:variant]")
  parser.add_argument("--steps", type=int, default=0,
                      help="pretraining steps of every row (0 = the recipe's run length)")
  parser.add_argument("--only", default="", help=f"comma-separated subset of {SETTING_NAMES}")
  parser.add_argument("--smoke", action="store_true",
                      help=f"configs/demo.py:tiny, {SMOKE_STEPS} steps, {SMOKE_PROBE_EPOCHS} probe "
                      "epochs: checks the script, measures nothing")
  args, rest = parser.parse_known_args(argv)
  overrides = grid.parse_overrides(parser, rest)
  args.only = grid.choose(parser, args.only, SETTING_NAMES)
  return args, overrides


def markdown_table(rows: list[dict]) -> str:
  lines = ["| setting | kNN top-1 | linear top-1 | final std | wall time |",
           "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['description']} | {r['knn_top1']:.1f}% | {r['linear_top1']:.1f}% | "
                 f"{r['final_std']:.3f} | {r['wall_s'] / 60:.1f} min |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  spec, steps, probe_epochs = args.config, args.steps, 0
  if args.smoke:
    spec, steps, probe_epochs = SMOKE_CONFIG, args.steps or SMOKE_STEPS, SMOKE_PROBE_EPOCHS
  chosen = [s for s in SETTINGS if s[0] in args.only]
  for name, _, _ in chosen:
    if os.path.exists(os.path.join(args.workdir, name)):
      sys.exit(f"error: {os.path.join(args.workdir, name)} exists; pass a new --workdir "
               "(each setting must train from scratch).")
  os.makedirs(args.workdir, exist_ok=True)
  rows = []
  for name, description, setting in chosen:
    print(f"=== {name}: {description}", flush=True)
    row = grid.run_setting(spec, {**overrides, **setting}, os.path.join(args.workdir, name),
                      steps, probe_epochs)
    rows.append({"setting": name, "description": description, "overrides": setting, **row})
    grid.write_results(args.workdir, markdown_table(rows),
                       {"config": spec, "steps": steps, "config_overrides": overrides}, rows)
  print(f"\n{spec}, {rows[0]['steps'] if rows else 0} steps, seed "
        f"{overrides.get('seed', 'of the recipe')}\n")
  print(markdown_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  main()
