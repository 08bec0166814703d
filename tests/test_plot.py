"""The plot command: files written, axes labelled, several runs overlaid (no pixel checks)."""

import json

import pytest

from conftest import run_cli
from vicreg_jax import plot


def fake_run(workdir, scale, diagnostics=True):
  """A workdir with the metrics the training loop logs (and diagnostics, optionally)."""
  workdir.mkdir()
  with open(workdir / "metrics.jsonl", "w") as f:
    for step in (2, 4, 6):
      f.write(json.dumps({"step": step, "loss": scale * 20 / step, "invariance": 0.2,
                          "variance": 0.7, "covariance": 0.1, "std_a": 0.3, "std_b": 0.3,
                          "lr": 0.01 * step}) + "\n")
      if diagnostics:
        f.write(json.dumps({"step": step, "representation_effective_rank": 9.0 * scale,
                            "embedding_effective_rank": 7.0, "representation_mean_abs_corr": 0.2,
                            "embedding_mean_abs_corr": 0.3}) + "\n")
  if diagnostics:
    (workdir / "spectra.json").write_text(json.dumps(
        {"step": 6, "representation": [0.5, 0.3, 0.2], "embedding": [0.6, 0.4, 0.0]}))
  return str(workdir)


def test_figures_overlay_every_run_with_labelled_axes(tmp_path):
  workdirs = [fake_run(tmp_path / "full", 1.0), fake_run(tmp_path / "novar", 2.0, False)]
  labels = plot.run_labels(workdirs)
  assert labels == ["full", "novar"]
  figures = plot.make_figures({l: plot.read_metrics(w) for l, w in zip(labels, workdirs)},
                              {l: plot.read_spectra(w) for l, w in zip(labels, workdirs)})
  assert set(figures) == {"loss_terms.png", "std.png", "learning_rate.png",
                          "effective_rank.png", "spectrum.png"}  # no accuracy logged
  loss_axes = figures["loss_terms.png"].axes
  assert [ax.get_title() for ax in loss_axes][0] == "VICReg loss"
  for ax in loss_axes:
    assert ax.get_xlabel() == "step" and ax.get_ylabel()
    assert [line.get_label() for line in ax.lines] == ["full", "novar"]
  std_labels = [line.get_label() for line in figures["std.png"].axes[0].lines]
  assert std_labels == ["full std_a", "full std_b", "novar std_a", "novar std_b"]
  rank_axes = figures["effective_rank.png"].axes[0]
  assert len(rank_axes.lines) == 2 and rank_axes.get_ylabel() == "effective rank"
  spectrum_axes = figures["spectrum.png"].axes
  assert [ax.get_yscale() for ax in spectrum_axes] == ["log", "log"]
  assert [line.get_label() for line in spectrum_axes[1].lines] == ["full (step 6)"]
  assert list(spectrum_axes[0].lines[0].get_ydata()) == [0.5, 0.3, 0.2]


def test_same_named_workdirs_are_told_apart_by_their_paths(tmp_path):
  assert plot.run_labels([str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")]) == [
      str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")]


def test_cli_writes_pngs_into_the_first_workdir_and_names_a_missing_one(tmp_path):
  first, second = fake_run(tmp_path / "one", 1.0), fake_run(tmp_path / "two", 3.0)
  result = run_cli("vicreg_jax.plot", f"--workdir={first}", f"--workdir={second}")
  assert result.returncode == 0, result.stderr[-2000:]
  written = sorted(p.name for p in (tmp_path / "one" / "plots").iterdir())
  assert written == ["effective_rank.png", "learning_rate.png", "loss_terms.png",
                     "spectrum.png", "std.png"]
  assert all((tmp_path / "one" / "plots" / n).read_bytes()[:4] == b"\x89PNG" for n in written)
  assert "Skipped (no run logged their metrics): accuracy.png" in result.stdout
  missing = run_cli("vicreg_jax.plot", f"--workdir={tmp_path / 'nothing'}")
  assert missing.returncode != 0
  assert missing.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "metrics.jsonl does not exist" in missing.stderr


def test_reading_a_workdir_without_metrics_names_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    plot.read_metrics(str(tmp_path))


def test_many_runs_share_one_legend_under_the_figure_with_a_colour_each():
  series = {"loss": ([1, 2], [3.0, 2.0]), "std_a": ([1, 2], [0.3, 0.2]),
            "std_b": ([1, 2], [0.3, 0.1])}
  runs = {f"run{i}": series for i in range(plot.LEGEND_INSIDE_MAX + 1)}
  figures = plot.make_figures(runs, {label: None for label in runs})
  std = figures["std.png"]
  assert std.axes[0].get_legend() is None and len(std.legends) == 1
  names = [t.get_text() for t in std.legends[0].get_texts()]
  assert names == [*runs, "std_a", "std_b"]  # runs by colour, then metrics by line style
  colours = {line.get_label().split()[0]: line.get_color() for line in std.axes[0].lines}
  assert len(set(map(str, colours.values()))) == len(runs)
  few = plot.make_figures({"a": series, "b": series}, {"a": None, "b": None})
  assert few["std.png"].axes[0].get_legend() is not None and not few["std.png"].legends
