"""Image folders (``root/<class>/<image>``): the one walker of readable images, and split paths.

Both streaming sources read their files from :func:`list_image_folder`: classes are the
sorted sub-folder names, files are sorted within each, and files that are not images or
are truncated (checked from their first and last bytes) are skipped and counted in the log,
so that stream positions stay exact for resuming.
"""

from __future__ import annotations

import logging
import os

import ml_collections

from vicreg_jax import paths

IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
# Trailers of complete files: JPEG end-of-image marker, PNG IEND chunk (+ CRC).
COMPLETE_TAIL = {b"\xff\xd8\xff": (b"\xff\xd9", 2), b"\x89PNG": (b"IEND\xaeB`\x82", 8)}


def _is_complete_image(path: str) -> bool:
  """Image magic bytes at the start and, for JPEG/PNG, the end marker (catches truncation)."""
  with paths.open_file(path, "rb") as f:
    head = f.read(4)
    magic = next((m for m in IMAGE_MAGIC if head.startswith(m)), None)
    if magic is None:
      return False
    if magic not in COMPLETE_TAIL:
      return True
    tail, size = COMPLETE_TAIL[magic]
    f.seek(0, os.SEEK_END)
    f.seek(max(f.tell() - size, 0))
    # JPEG writers may pad after EOI; accept the marker anywhere in the last bytes.
    return tail in f.read()


def list_image_folder(root: str, missing_hint: str) -> tuple[list[str], list[int], list[str]]:
  """Every readable image under ``root/<class>/`` with its class index, and the class names.

  Classes are the sorted sub-folder names (ImageNet's ``train/`` and ``val/`` share them, so
  their indices agree). Raises FileNotFoundError, ending with ``missing_hint``, when
  ``root`` does not exist.
  """
  if not paths.isdir(root):
    raise FileNotFoundError(f"Image folder {root!r} does not exist; {missing_hint}")
  classes = sorted(c for c in paths.listdir(root) if paths.isdir(paths.join(root, c)))
  if not classes:
    flat = sum(_is_complete_image(paths.join(root, name)) for name in paths.listdir(root))
    raise FileNotFoundError(f"Image folder {root!r} has {flat} images but no class "
                            f"sub-folders; the layout is {root}/<class>/*.jpg (one sub-folder "
                            "per class; for pretraining any one sub-folder will do).")
  files, labels, skipped = [], [], 0
  for index, cls in enumerate(classes):
    folder = paths.join(root, cls)
    for name in sorted(paths.listdir(folder)):
      path = paths.join(folder, name)
      if _is_complete_image(path):
        files.append(path)
        labels.append(index)
      else:
        skipped += 1
  if skipped:
    logging.warning("Skipped %d non-image or truncated files in %s.", skipped, root)
  return files, labels, classes


def list_image_files(root: str, process_index: int = 0, process_count: int = 1) -> list[str]:
  """This process's share of the readable images under ``root/<class>/`` (view stream).

  Process ``i`` takes every ``process_count``-th file from the ``i``-th (so every class
  is spread over all processes); shares are disjoint and of equal size (the remainder of
  the sorted list is dropped).
  """
  files, _, _ = list_image_folder(root, "set --config.data.path to a folder with one "
                                  "sub-folder of images per class.")
  per_process = len(files) // process_count
  if not per_process:
    raise FileNotFoundError(f"No images (JPEG/PNG/GIF/BMP) for {process_count} process(es) "
                            f"in {root}/<class>/ ({len(files)} found).")
  return files[process_index:per_process * process_count:process_count]


def list_labelled_files(root: str) -> tuple[list[str], list[int], list[str]]:
  """:func:`list_image_folder` of an evaluation split: files, class indices, class names."""
  files, labels, classes = list_image_folder(
      root, "evaluation reads the split's folder next to --config.data.path (root/train -> "
      "root/<split>), one sub-folder of images per class.")
  if not files:
    raise FileNotFoundError(f"No images (JPEG/PNG/GIF/BMP) in {root}/<class>/.")
  return files, labels, classes


def split_folder(data: ml_collections.ConfigDict, split: str) -> str:
  """Image folder of ``split``: ``data.path`` for ``data.split``, else its sibling ``split``
  (``root/train`` -> ``root/val``)."""
  if split == data.split:
    return data.path
  if paths.is_url(data.path):
    return paths.join(paths.dirname(data.path), split)
  return os.path.join(os.path.dirname(os.path.normpath(data.path)), split)
