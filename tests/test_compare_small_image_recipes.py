"""experiments/compare_small_image_recipes.py: the smoke mode trains and evaluates every row."""

import json

from conftest import load_experiment


def load_script():
  return load_experiment("compare_small_image_recipes")


def test_smoke_mode_trains_evaluates_and_tabulates_the_two_recipes(tmp_path, capsys):
  # Two rows (each compiles its own step); the other settings run the same code path.
  script = load_script()
  names = ["current", "peer"]
  rows = script.main(["--workdir", str(tmp_path / "runs"), "--smoke", "--only", ",".join(names)])
  out = capsys.readouterr().out
  assert [r["setting"] for r in rows] == names
  table = (tmp_path / "runs" / "table.md").read_text()
  assert table.strip() in out
  assert table.count("\n") == 2 + len(names)  # header, rule, one line per row
  for name, description, _ in script.SETTINGS:
    if name in names:
      assert f"| {description} |" in table
      assert (tmp_path / "runs" / name / "checkpoints").is_dir()  # its own workdir
  for row in rows:
    assert row["steps"] == script.SMOKE_STEPS
    assert 0 <= row["knn_top1"] <= 100 and 0 <= row["linear_top1"] <= 100
    assert row["final_std"] > 0 and row["wall_s"] > 0
  saved = json.loads((tmp_path / "runs" / "results.json").read_text())
  assert [r["setting"] for r in saved["rows"]] == names


def test_existing_setting_workdir_is_refused(tmp_path):
  script = load_script()
  (tmp_path / "current").mkdir()
  try:
    script.main(["--workdir", str(tmp_path), "--smoke", "--only", "current"])
  except SystemExit as exit_:
    assert "exists" in str(exit_.code)
  else:
    raise AssertionError("an existing setting workdir was not refused")


def test_overrides_and_unknown_settings(capsys):
  script = load_script()
  args, overrides = script.parse_args(["--workdir", "w", "--config.data.name=npz",
                                       "--config.data.path=/d/x.npz", "--config.seed=3"])
  assert overrides == {"data.name": "npz", "data.path": "/d/x.npz", "seed": 3}
  assert args.only == list(script.SETTING_NAMES)
  try:
    script.parse_args(["--workdir", "w", "--only", "current,nope"])
  except SystemExit:
    assert "nope" in capsys.readouterr().err
  else:
    raise AssertionError("an unknown setting was accepted")
