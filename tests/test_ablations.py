"""experiments/ablations.py: the smoke grid trains, scores, tabulates, plots, and resumes."""

import json

import pytest

from conftest import load_experiment


@pytest.fixture(scope="module")
def ablations():
  return load_experiment("ablations")


@pytest.fixture(scope="module")
def smoke_grid(ablations, tmp_path_factory):
  """The smoke grid (full VICReg and no variance term) run once for the tests below."""
  workdir = tmp_path_factory.mktemp("ablations")
  rows = ablations.main(["--workdir", str(workdir), "--grid", "smoke", "--diagnostics", "4"])
  return workdir, rows


def test_smoke_grid_table_diagnostics_and_collapse(ablations, smoke_grid, capsys):
  workdir, rows = smoke_grid
  assert [r["setting"] for r in rows] == list(ablations.GRIDS["smoke"])
  table = (workdir / "table.md").read_text()
  assert table.count("\n") == 2 + len(rows)  # header, rule, one line per row
  for row in rows:
    assert f"| {ablations.ROWS[row['setting']][0]} |" in table
    assert row["steps"] == ablations.SMOKE_STEPS and not row["resumed"]
    assert 0 <= row["knn_top1"] <= 100 and 0 <= row["linear_top1"] <= 100
    # The diagnostics were logged (every 40 // 4 = 10 steps): an effective rank is >= 1.
    assert 1 <= row["representation_effective_rank"] and 1 <= row["embedding_effective_rank"]
    steps = [json.loads(line)["step"] for line in
             (workdir / row["setting"] / "metrics.jsonl").read_text().splitlines()
             if "embedding_effective_rank" in line]
    assert steps == [10, 20, 30, 40]
  by_name = {r["setting"]: r for r in rows}
  # Without the variance hinge the embedding shrinks towards a point; with it, it does not.
  assert by_name["no_variance"]["collapsed"] and not by_name["full"]["collapsed"]
  assert by_name["no_variance"]["final_std"] < ablations.COLLAPSED_STD < by_name["full"]["final_std"]
  saved = json.loads((workdir / "results.json").read_text())
  assert [r["setting"] for r in saved["rows"]] == [r["setting"] for r in rows]
  plots = sorted(p.name for p in (workdir / "plots").iterdir())
  assert "loss_terms.png" in plots and "effective_rank.png" in plots, plots


def test_rerun_reads_finished_rows_instead_of_training(ablations, smoke_grid, capsys):
  workdir, rows = smoke_grid
  # A finished row's row.json is its result: rerunning the grid trains nothing (a row that
  # trained again would write a second run into its metrics.jsonl).
  metrics = (workdir / "full" / "metrics.jsonl").read_text()
  again = ablations.main(["--workdir", str(workdir), "--grid", "smoke", "--diagnostics", "4"])
  assert again == json.loads(json.dumps(rows))
  assert (workdir / "full" / "metrics.jsonl").read_text() == metrics
  assert (workdir / "table.md").read_text().strip() in capsys.readouterr().out


def test_arguments(ablations, capsys):
  args, overrides = ablations.parse_args(["--workdir", "w", "--config.data.name=npz",
                                          "--config.seed=3"])
  assert overrides == {"data.name": "npz", "seed": 3}
  assert args.only == list(ablations.GRIDS["paper"]) == list(ablations.ROWS)
  assert args.config == ablations.DEFAULT_CONFIG and args.steps == 0
  args, _ = ablations.parse_args(["--workdir", "w", "--grid", "smoke", "--only", "no_variance"])
  assert args.only == ["no_variance"] and args.steps == ablations.SMOKE_STEPS
  assert args.config == ablations.SMOKE_CONFIG
  for bad, named in ((["--only", "full,nope"], "nope"), (["--diagnostics", "0"], "--diagnostics"),
                     (["--steps", "-1"], "--steps"), (["--config.seed"], "--config.seed")):
    with pytest.raises(SystemExit):
      ablations.parse_args(["--workdir", "w", *bad])
    assert named in capsys.readouterr().err


def test_every_row_names_real_config_keys(ablations):
  # A typo in a row's override would only surface when that row runs, hours into a grid.
  from vicreg_jax.config import load_config_file
  for name, (_, setting) in ablations.ROWS.items():
    config = load_config_file(ablations.DEFAULT_CONFIG, **setting)
    for key, value in setting.items():
      node = config
      for part in key.split("."):
        node = node[part]
      assert node == value, name


def test_diagnostics_spacing(ablations):
  assert ablations.diagnostics_every(ablations.SMOKE_CONFIG, {}, 40, 4) == 10
  assert ablations.diagnostics_every(ablations.SMOKE_CONFIG, {}, 3, 10) == 1
