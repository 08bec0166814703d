"""Audio clips on the host: ESC-50 as distributed and ``root/<class>/*.wav`` (etc.) folders.

Decoding (``soundfile``, i.e. libsndfile: WAV, FLAC, OGG/Vorbis, AIFF, MP3) and resampling (SciPy's
polyphase ``resample_poly``) give mono float32 clips of one fixed length: channels are
averaged, a clip at another rate is resampled to ``sample_rate``, longer clips keep their
first ``clip_samples`` samples and shorter ones are zero-padded at the end. A file that
cannot be decoded or holds no samples is skipped, counted and named in the log; a dataset
with no readable clip fails with the path that was searched. Both libraries are imported
by these loaders only.

ESC-50 (Piczak, ACM MM 2015; https://github.com/karolpiczak/ESC-50) is read from its own
layout: ``root/audio/*.wav`` and ``root/meta/esc50.csv`` with the header
``filename,fold,target,category,esc10,src_file,take``. Its folds keep the fragments of one
source recording together, so splits are chosen by fold (the paper: folds 1-4 train, 1,600
clips; fold 5 test, 400 clips).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from typing import Sequence

import numpy as np

from vicreg_jax import paths as paths_lib

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")  # what libsndfile reads
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
ESC50_FOLDS = (1, 2, 3, 4, 5)
PROGRESS_EVERY = 500  # log a line every this many decoded files
SKIPPED_NAMED = 5     # unreadable files named in the log (the rest are counted)


class UnreadableAudio(ValueError):
  """A file that cannot be decoded or holds no samples (``decode_clips`` skips and counts it)."""


def decode_clip(path: str, sample_rate: int, clip_samples: int) -> np.ndarray:
  """The file at ``path`` as mono float32 ``[clip_samples]`` at ``sample_rate`` Hz.

  Raises:
    UnreadableAudio naming the file and libsndfile's reason, or that it holds no samples.
  """
  # pylint: disable=g-import-not-at-top
  import soundfile
  from scipy import signal
  try:
    source = io.BytesIO(paths_lib.read_bytes(path)) if paths_lib.is_url(path) else path
    data, rate = soundfile.read(source, dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError) as error:  # not audio, or damaged
    raise UnreadableAudio(f"{path}: {error}") from error
  if data.size == 0:
    raise UnreadableAudio(f"{path}: no samples")
  clip = data.mean(axis=1)
  if rate != sample_rate:
    common = math.gcd(int(rate), int(sample_rate))
    clip = signal.resample_poly(clip, sample_rate // common, int(rate) // common)
  out = np.zeros(clip_samples, np.float32)
  out[:min(clip_samples, len(clip))] = clip[:clip_samples]
  return out


def decode_clips(paths: Sequence[str], sample_rate: int, clip_samples: int,
                 what: str) -> tuple[np.ndarray, np.ndarray]:
  """Decodes ``paths``; returns f32 ``[n, clip_samples]`` clips and the int64 indices of the
  paths that were readable (the others are skipped, counted and the first few named)."""
  clips, kept, skipped = [], [], []
  for i, path in enumerate(paths):
    try:
      clips.append(decode_clip(path, sample_rate, clip_samples))
      kept.append(i)
    except UnreadableAudio as error:
      skipped.append(str(error))
    if (i + 1) % PROGRESS_EVERY == 0:
      logging.info("%s: decoded %d of %d files.", what, i + 1, len(paths))
  if skipped:
    logging.warning("%s: skipped %d unreadable or empty files: %s", what, len(skipped),
                    "; ".join(skipped[:SKIPPED_NAMED]))
  if not clips:
    raise FileNotFoundError(f"{what}: none of the {len(paths)} audio files could be decoded "
                            f"({'; '.join(skipped[:SKIPPED_NAMED])}); check the files or the "
                            "path.")
  return np.stack(clips), np.asarray(kept, np.int64)


def read_esc50_meta(root: str) -> list[dict]:
  """The rows of ``root/meta/esc50.csv`` (fold, target and esc10 parsed), checked."""
  meta = paths_lib.join(root, "meta", "esc50.csv")
  if not paths_lib.isfile(meta):
    raise FileNotFoundError(
        f"ESC-50: {meta} not found. Point --config.data.path at the folder that holds "
        "audio/ and meta/esc50.csv (a clone of https://github.com/karolpiczak/ESC-50).")
  with io.StringIO(paths_lib.read_text(meta), newline="") as f:
    reader = csv.DictReader(f)
    missing = sorted(set(ESC50_COLUMNS) - set(reader.fieldnames or ()))
    if missing:
      raise ValueError(f"ESC-50: {meta} lacks the columns {missing}; its header must be "
                       f"{','.join(ESC50_COLUMNS)}.")
    return [dict(row, fold=int(row["fold"]), target=int(row["target"]),
                 esc10=row["esc10"].strip().lower() == "true") for row in reader]


def load_esc50(root: str, folds: Sequence[int], *, sample_rate: int, clip_samples: int,
               esc10: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """ESC-50 clips of ``folds``: f32 ``[n, clip_samples]``, int32 labels ``[n]`` and the class
  names (index = label). ``esc10``: only the ESC-10 subset, its 10 classes renumbered 0-9 in
  the order of their ESC-50 targets."""
  bad = sorted(set(folds) - set(ESC50_FOLDS))
  if bad or not folds:
    raise ValueError(f"ESC-50 folds {list(folds)}: choose from {ESC50_FOLDS}.")
  rows = [r for r in read_esc50_meta(root) if not esc10 or r["esc10"]]
  names = {r["target"]: r["category"] for r in rows}
  targets = sorted(names)
  label_of = {t: i for i, t in enumerate(targets)}
  chosen = [r for r in rows if r["fold"] in folds]
  what = f"ESC-50{'-10' if esc10 else ''} folds {sorted(folds)} in {root}"
  if not chosen:
    raise FileNotFoundError(f"{what}: esc50.csv lists no clips of these folds.")
  paths = [paths_lib.join(root, "audio", r["filename"]) for r in chosen]
  clips, kept = decode_clips(paths, sample_rate, clip_samples, what)
  labels = np.asarray([label_of[chosen[i]["target"]] for i in kept], np.int32)
  logging.info("%s: %d clips, %d classes.", what, len(clips), len(targets))
  return clips, labels, [names[t] for t in targets]


def list_audio_folder(root: str) -> tuple[list[str], list[int], list[str]]:
  """Audio files (``AUDIO_EXTENSIONS``) under ``root/<class>/``, sorted, with class indices
  (classes = sorted sub-folder names), and the class names."""
  if not paths_lib.isdir(root):
    raise FileNotFoundError(f"Audio folder {root!r} does not exist; the layout is "
                            f"{root}/<class>/*.wav (or {', '.join(AUDIO_EXTENSIONS[1:])}).")
  classes = sorted(c for c in paths_lib.listdir(root)
                   if paths_lib.isdir(paths_lib.join(root, c)))
  files, labels = [], []
  for index, cls in enumerate(classes):
    folder = paths_lib.join(root, cls)
    for name in sorted(paths_lib.listdir(folder)):
      if name.lower().endswith(AUDIO_EXTENSIONS):
        files.append(paths_lib.join(folder, name))
        labels.append(index)
  if not files:
    raise FileNotFoundError(f"Audio folder {root!r} has no audio files "
                            f"({', '.join(AUDIO_EXTENSIONS)}) in class sub-folders (found "
                            f"sub-folders {classes}); the layout is {root}/<class>/*.wav.")
  return files, labels, classes


def load_audio_folder(root: str, *, sample_rate: int,
                      clip_samples: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Every readable clip under ``root/<class>/``: f32 ``[n, clip_samples]``, int32 labels
  ``[n]`` and the class names."""
  files, labels, classes = list_audio_folder(root)
  clips, kept = decode_clips(files, sample_rate, clip_samples, f"Audio folder {root}")
  logging.info("Audio folder %s: %d clips, %d classes.", root, len(clips), len(classes))
  return clips, np.asarray(labels, np.int32)[kept], classes
