"""``python -m vicreg_jax.plot --workdir W [--workdir W2 ...] [--out DIR]``: training curves.

Reads each workdir's ``metrics.jsonl`` (and ``spectra.json``, written by the collapse
diagnostics) and writes PNGs, every run overlaid with its own legend entry, into
``--out`` (default ``<first workdir>/plots``): the loss terms, the embedding std, the
learning rate, the kNN / online-probe accuracy and the effective rank over steps, and the
singular-value spectrum at the last diagnostic step. A figure whose metrics no run logged is
skipped and named. Headless (matplotlib's Agg backend); needs no JAX device.
"""

from __future__ import annotations

import collections
import json
import os
from typing import NamedTuple

from absl import flags

from vicreg_jax import cli, paths
from vicreg_jax.metrics import METRICS_FILE, SPECTRA_FILE

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("workdir", None, "A pretraining workdir; repeat to overlay runs.")
flags.DEFINE_string("out", None, "Folder for the PNGs (default: <first workdir>/plots).")


class Panel(NamedTuple):
  """One axes: a title, a y label and the metrics drawn on it (one line per run each)."""
  title: str
  ylabel: str
  metrics: tuple[str, ...]


# File name -> its panels (side by side).
FIGURES = {
    "loss_terms.png": (
        Panel("VICReg loss", "loss", ("loss",)),
        Panel("invariance (MSE)", "unweighted term", ("invariance",)),
        Panel("variance (hinge on std)", "unweighted term", ("variance",)),
        Panel("covariance (off-diagonal)", "unweighted term", ("covariance",))),
    "std.png": (Panel("embedding std per branch", "mean std over dimensions",
                      ("std_a", "std_b")),),
    "learning_rate.png": (Panel("learning rate", "learning rate", ("lr",)),),
    "accuracy.png": (Panel("accuracy during pretraining", "top-1 (%)",
                           ("knn_top1", "online_probe_top1")),),
    "effective_rank.png": (
        Panel("effective rank (RankMe)", "effective rank",
              ("representation_effective_rank", "embedding_effective_rank")),
        Panel("mean |off-diagonal correlation|", "mean |corr|",
              ("representation_mean_abs_corr", "embedding_mean_abs_corr"))),
}
SPECTRUM_FIGURE = "spectrum.png"
# Legends: inside each panel up to this many lines, else one legend under the figure
# (LEGEND_COLUMNS wide, LEGEND_ROW_INCHES per row); line styles tell a panel's metrics apart.
LEGEND_INSIDE_MAX = 6
LEGEND_COLUMNS = 4
LEGEND_ROW_INCHES = 0.22
LEGEND_MIN_WIDTH_INCHES = 9.0  # a one-panel figure widens to fit the legend's columns
LINE_STYLES = ("-", "--", ":", "-.")


def read_metrics(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
  """``{metric: (steps, values)}`` from ``workdir/metrics.jsonl`` (raises FileNotFoundError
  naming the file when the workdir has none)."""
  path = paths.join(workdir, METRICS_FILE)
  if not paths.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: --workdir must be a pretraining workdir "
                            "that has logged at least one step.")
  series = collections.defaultdict(lambda: ([], []))
  for line in paths.read_text(path).splitlines():
    if line.strip():
      record = json.loads(line)
      for key, value in record.items():
        if key != "step":
          series[key][0].append(record["step"])
          series[key][1].append(value)
  return dict(series)


def read_spectra(workdir: str) -> dict | None:
  """The last diagnostic step's spectra (``{"step", "representation", "embedding"}``)."""
  path = paths.join(workdir, SPECTRA_FILE)
  if not paths.isfile(path):
    return None
  return json.loads(paths.read_text(path))


def run_labels(workdirs: list[str]) -> list[str]:
  """Legend names: each workdir's last path component, the whole path where those repeat."""
  normal = [w.rstrip("/") if paths.is_url(w) else os.path.normpath(w) for w in workdirs]
  names = [paths.basename(w) for w in normal]
  return names if len(set(names)) == len(names) else normal


def make_figures(runs: dict[str, dict], spectra: dict[str, dict | None]) -> dict:
  """``{file name: matplotlib Figure}`` of the figures some run has data for.

  Args:
    runs: ``{label: read_metrics(workdir)}``, in legend order.
    spectra: ``{label: read_spectra(workdir)}``.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel  (only this command needs it)
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel

  # One colour per run in every panel; a panel's metrics differ by line style.
  palette = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
  color = {label: palette(i % palette.N) for i, label in enumerate(runs)}

  def legend(fig, axes, metrics: tuple[str, ...]) -> None:
    """Each panel's own legend for a few lines; one legend under the figure for many."""
    if len(runs) * len(metrics) <= LEGEND_INSIDE_MAX:
      for ax in axes:
        if ax.lines:
          ax.legend(fontsize="small")
      fig.tight_layout()
      return
    handles = [Line2D([], [], color=color[label], label=label) for label in runs]
    if len(metrics) > 1:
      handles += [Line2D([], [], color="black", linestyle=LINE_STYLES[j], label=metric)
                  for j, metric in enumerate(metrics)]
    columns = min(LEGEND_COLUMNS, len(handles))
    rows = -(-len(handles) // columns)
    fig.set_figwidth(max(fig.get_figwidth(), LEGEND_MIN_WIDTH_INCHES))
    fig.set_figheight(fig.get_figheight() + LEGEND_ROW_INCHES * rows)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize="small",
               frameon=False)
    fig.tight_layout(rect=(0, LEGEND_ROW_INCHES * rows / fig.get_figheight(), 1, 1))

  figures = {}
  for name, panels in FIGURES.items():
    if not any(m in series for series in runs.values() for p in panels for m in p.metrics):
      continue
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
      for label, series in runs.items():
        for j, metric in enumerate(panel.metrics):
          if metric in series:
            steps, values = series[metric]
            suffix = f" {metric}" if len(panel.metrics) > 1 else ""
            ax.plot(steps, values, label=f"{label}{suffix}", color=color[label],
                    linestyle=LINE_STYLES[j])
      ax.set(title=panel.title, xlabel="step", ylabel=panel.ylabel)
    # Line-style names: what the panels' j-th metrics share ("representation", "embedding").
    styles = tuple(os.path.commonprefix([p.metrics[j] for p in panels if j < len(p.metrics)])
                   .rstrip("_") for j in range(max(len(p.metrics) for p in panels)))
    legend(fig, axes[0], styles)
    figures[name] = fig
  if any(spectra.values()):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    for ax, output in zip(axes[0], ("representation", "embedding")):
      for label, spectrum in spectra.items():
        if spectrum:
          values = spectrum[output]
          ax.plot(range(1, len(values) + 1), values, label=f"{label} (step {spectrum['step']})",
                  color=color[label])
      ax.set(title=f"{output} spectrum", xlabel="singular value index",
             ylabel="singular value / sum", yscale="log")
    legend(fig, axes[0], ("",))
    figures[SPECTRUM_FIGURE] = fig
  return figures


def plot_workdirs(workdirs: list[str], out: str) -> tuple[list[str], list[str]]:
  """Writes the PNGs of ``workdirs`` (overlaid) into ``out``; returns ``(written, skipped)``
  file names."""
  labels = run_labels(workdirs)
  runs = {label: read_metrics(w) for label, w in zip(labels, workdirs)}
  spectra = {label: read_spectra(w) for label, w in zip(labels, workdirs)}
  figures = make_figures(runs, spectra)
  paths.makedirs(out)
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  for name, fig in figures.items():
    with paths.open_file(paths.join(out, name), "wb") as f:
      fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
  skipped = [n for n in (*FIGURES, SPECTRUM_FIGURE) if n not in figures]
  return sorted(figures), skipped


def main() -> None:
  if not FLAGS.workdir:
    raise ValueError("pass --workdir (repeat it to overlay several runs).")
  out = FLAGS.out or paths.join(FLAGS.workdir[0], "plots")
  written, skipped = plot_workdirs(FLAGS.workdir, out)
  print(f"Wrote {', '.join(written)} to {out}")
  if skipped:
    print(f"Skipped (no run logged their metrics): {', '.join(skipped)}")


if __name__ == "__main__":
  cli.run(main)
