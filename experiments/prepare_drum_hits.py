"""Labelled drum hits from Debian's Hydrogen drum kits, as an audio class folder, split by kit.

Usage (the README's audio demo):
  sudo apt-get install -y --no-install-recommends hydrogen-drumkits hydrogen-data
  python experiments/prepare_drum_hits.py --out /tmp/drum_hits
  python -m vicreg_jax.main --config configs/audio_demo.py --config.data.path=/tmp/drum_hits \\
      --workdir /tmp/audio_demo

Each kit's ``drumkit.xml`` names its instruments and their sample files (one per velocity
layer). An instrument becomes one of five classes by whole words of its name (``CLASS_RULES``,
reviewed against every kit installed by the packages); anything else (claps, cowbells,
sticks, effects) is left out, as are the kits in ``EXCLUDED_KITS``. Velocity layers of one
drum are near-duplicates, so the split is by kit: the kits in ``TEST_KITS`` are held out
whole. Writes ``OUT/{train,test}/<class>/<kit>__<file>`` as symbolic links to the installed
files and prints the counts.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import xml.etree.ElementTree as ElementTree

DRUMKITS = "/usr/share/hydrogen/data/drumkits"
INSTALL = ("sudo apt-get install -y --no-install-recommends hydrogen-drumkits hydrogen-data "
           "(Debian/Ubuntu; 150 MB)")
# Instrument name -> class, first matching rule wins (case-insensitive whole words).
# Names may run digits or a size into the word ("Snare1", "crash16inch", "tomhi2").
CLASS_RULES = (
    ("hihat", r"\b(hi-?hats?|o?hh|hats?)\b"),
    ("cymbal", r"\b(crash|ride|splash|china|cymbals?)(\d+inch)?\b|\bcrash"),
    ("kick", r"\b(kick|bass ?drum|bd)\d*\b"),
    ("snare", r"\bsnare\d*\b"),
    ("tom", r"\btom(s|hi|lo|mid)?\d*\b"),
)
# Hand percussion and a clapping kit: no drum-kit classes to learn from.
EXCLUDED_KITS = ("circAfrique v4", "Gimme A Hand 1.0")
# Held out whole (acoustic kits with all five classes).
TEST_KITS = ("GMRockKit", "Millo_MultiLayered3", "ColomboAcousticDrumkit")


def instrument_class(name: str) -> str | None:
  """The class of an instrument name by ``CLASS_RULES``, or None (left out)."""
  for cls, pattern in CLASS_RULES:
    if re.search(pattern, name, flags=re.IGNORECASE):
      return cls
  return None


def kit_samples(kit_dir: str) -> list[tuple[str, str]]:
  """``(class, file path)`` of every classified sample file of one kit."""
  with open(os.path.join(kit_dir, "drumkit.xml"), encoding="utf-8") as f:
    text = re.sub(r'\sxmlns(:\w+)?="[^"]+"', "", f.read(), count=0)  # plain tag names
  root = ElementTree.fromstring(text)
  out = []
  for instrument in root.iter("instrument"):
    cls = instrument_class(instrument.findtext("name", ""))
    if cls is None:
      continue
    for filename in instrument.iter("filename"):
      path = os.path.join(kit_dir, filename.text.strip())
      if os.path.isfile(path):
        out.append((cls, path))
  return out


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder to write train/ and test/ into")
  parser.add_argument("--drumkits", default=DRUMKITS, help="Hydrogen's drumkits folder")
  args = parser.parse_args(argv)
  if not os.path.isdir(args.drumkits):
    raise SystemExit(f"{args.drumkits} not found: install the drum kits with {INSTALL}.")
  if os.path.exists(args.out) and os.listdir(args.out):
    raise SystemExit(f"{args.out} exists and is not empty; remove it or pick another --out.")
  counts = collections.Counter()
  for kit in sorted(os.listdir(args.drumkits)):
    kit_dir = os.path.join(args.drumkits, kit)
    if kit in EXCLUDED_KITS or not os.path.isfile(os.path.join(kit_dir, "drumkit.xml")):
      continue
    split = "test" if kit in TEST_KITS else "train"
    for cls, path in kit_samples(kit_dir):
      folder = os.path.join(args.out, split, cls)
      os.makedirs(folder, exist_ok=True)
      link = os.path.join(folder, f"{kit.replace(' ', '_')}__{os.path.basename(path)}")
      if not os.path.lexists(link):
        os.symlink(path, link)
        counts[split, cls] += 1
  if not counts:
    raise SystemExit(f"No classified samples under {args.drumkits}; install them with {INSTALL}.")
  classes = sorted({cls for _, cls in counts})
  print("| split | " + " | ".join(classes) + " | total |")
  print("|---|" + "---|" * (len(classes) + 1))
  for split in ("train", "test"):
    row = [counts[split, cls] for cls in classes]
    print(f"| {split} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
  return dict(counts)


if __name__ == "__main__":
  main(sys.argv[1:])
