"""Device time of a jax.profiler trace by kernel category and by part of the step.

Usage:
  python experiments/summarize_trace.py /tmp/prof      # newest trace under a --profile_dir
  python experiments/summarize_trace.py run/host.trace.json.gz --steps 5 --window ""

Reads the trace JSON that ``jax.profiler.trace`` writes
(``<dir>/plugins/profile/<run>/<host>.trace.json.gz``; ``perfetto_trace.json.gz`` beside it
is the same without metadata). Pure Python: no JAX needed.

Device events. GPU: the events on the "Stream #..." tracks of the "/device:GPU:N" processes
(CUDA kernels, memcpy, memset; "CUPTI overhead" is not a stream). CPU, where no such track
exists: the events with an ``hlo_op`` argument, XLA:CPU's ops on the host's worker threads.
An event's time is its own: the events nested in it on the same track are subtracted (a
while loop and its body's ops count once).

Window: the annotation named ``--window`` (``benchmark_step.py`` puts its profiled steps in
one, with the step count as its ``steps`` argument); device events that start inside it.
Without one: from the first device event to the last, ``--steps`` steps.

Category: the first of ``CATEGORY_RULES`` whose pattern occurs in the event's label (its
kernel or op name, its ``hlo_op`` and, from the HLO text, that instruction's opcode,
custom-call target and the ``CALLED_OPCODES`` in the computation it calls, e.g. a CPU fusion
around a convolution); no match: "other", whose 10 largest names are printed so that the
rules can be refined.

Part: the first of ``PART_RULES`` matching the op's JAX name stack ("jit(train_step)/
transpose(jvp(VICReg))/backbone/..."; ``train.make_train_step`` names the augment, loss and
optimizer scopes). It comes from the event (GPU kernels carry their op's name in the
``op_name``, ``name`` or ``tf_op`` argument), else from the compiled HLO text beside the
trace (``<module>.hlo.txt``, written by ``benchmark_step.py --profile_dir``; ``--hlo``).

Host gap: the window's wall time minus the union of the device events' intervals, split into
before the first device event (dispatch), between events and after the last one.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re

DEFAULT_WINDOW = "benchmark_step.profiled_steps"  # benchmark_step.PROFILE_WINDOW
# Ordered (category, regular expression) pairs, matched case-insensitively against an event's
# label; the first match wins, so the specific patterns come first. cuDNN's convolution
# kernels are implicit GEMMs (fprop / dgrad / wgrad), so convolution precedes matmul;
# "conv(?!ert)" keeps convert ops out of it.
CATEGORY_RULES = (
    ("collectives", r"nccl|all-?reduce|all_reduce|all-?gather|all_gather|reduce-scatter|"
                    r"reduce_scatter|collective-permute|all-to-all|alltoall"),
    ("convolution", r"convolution|cudnn|conv(?!ert)|fprop|dgrad|wgrad|implicit_?gemm|"
                    r"implicit_convolve"),
    ("matmul/gemm", r"gemm|\bdot|dot[._]|matmul|cublas|cutlass|nvjet|xmma"),
    ("copies/transposes", r"memcpy|memset|copy|transpose|nchwtonhwc|nhwctonchw|"
                          r"dynamic[-_]update[-_]slice"),
    ("reductions/BatchNorm", r"reduce|reduction|batch_?norm"),
    ("elementwise fusions", r"fusion|wrapped_|elementwise|\b(add|subtract|multiply|divide|"
                            r"maximum|minimum|select|compare|convert|exponential|log|sqrt|rsqrt|"
                            r"negate|abs|power|tanh|clamp|and|or|not|xor|iota|broadcast|pad|"
                            r"slice|concatenate|reverse|rng-bit-generator|sine|cosine|floor|"
                            r"round-nearest-even|shift-left|shift-right-logical|"
                            r"is-finite)\b"),
)
OTHER = "other"
CATEGORIES = tuple(name for name, _ in CATEGORY_RULES) + (OTHER,)
# Ordered (part, regular expression) pairs matched against an op's JAX name stack; a backward
# op's stack has "transpose(jvp(...))" around the forward's module names.
PART_RULES = (
    ("augmentation", r"augment"),
    ("optimizer", r"(^|/)optimizer(/|$)"),
    ("loss", r"\bloss\b"),
    ("expander backward", r"transpose\(.*expander"),
    ("expander forward", r"expander"),
    ("trunk backward", r"transpose\(.*backbone"),
    ("trunk forward", r"backbone"),
)
# Opcodes inside a called computation (a fusion's body) that name its category.
CALLED_OPCODES = ("convolution", "dot", "reduce", "reduce-window", "all-reduce", "all-gather",
                  "reduce-scatter", "all-to-all", "collective-permute")
REST = "rest of the step"  # named ops that match no part: finiteness guard, metrics, norms
UNNAMED = "no name stack"
TOP_OTHER = 10
STREAM_TRACK_PREFIX = "Stream"
DEVICE_PROCESS_PREFIX = "/device:"
ARG_NAME_KEYS = ("op_name", "name", "tf_op", "long_name")
US_PER_MS = 1e3
PARALLEL_TOLERANCE_US = 1.0  # summed minus busy time below this is float rounding

HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=]+) = .*? "
                             r"(?P<opcode>[a-z][a-z0-9-]*)\(")
HLO_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+) .*\{\s*$")


def compile_rules(rules):
  return tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in rules)


CATEGORY_PATTERNS = compile_rules(CATEGORY_RULES)
PART_PATTERNS = compile_rules(PART_RULES)


def first_match(patterns, text: str, default: str) -> str:
  for name, pattern in patterns:
    if pattern.search(text):
      return name
  return default


def category(label: str) -> str:
  """The kernel category of an event label (name, hlo_op, opcode, custom-call target)."""
  return first_match(CATEGORY_PATTERNS, label, OTHER)


def part(op_name: str) -> str:
  """The part of the step an op's JAX name stack belongs to."""
  return first_match(PART_PATTERNS, op_name, REST) if op_name else UNNAMED


def find_trace(path: str) -> str:
  """``path`` itself, or the newest ``*.trace.json.gz`` (else ``perfetto_trace.json.gz``)
  under the folder ``path``."""
  if os.path.isfile(path):
    return path
  found = [f for f in glob.glob(os.path.join(path, "**", "*.json.gz"), recursive=True)
           if f.endswith(".trace.json.gz") or f.endswith("perfetto_trace.json.gz")]
  if not found:
    raise FileNotFoundError(f"no *.trace.json.gz under {path}")
  # The newest run's folder; in it, the host's own trace before its perfetto copy.
  return max(found, key=lambda f: (os.path.getmtime(os.path.dirname(f)),
                                   f.endswith(".trace.json.gz")))


def read_hlo(path: str) -> dict[str, tuple[str, str]]:
  """``{instruction name: (description, op_name)}`` from HLO text. The description is the
  opcode, its custom-call target and the ``CALLED_OPCODES`` inside the computations it calls
  (a fusion that holds a convolution says so). An instruction without an op_name (a fusion,
  say) gets the longest common name-stack prefix of the instructions it calls."""
  instructions, names_in = {}, collections.defaultdict(list)
  opcodes_in = collections.defaultdict(set)
  computation = ""
  with open(path, encoding="utf-8") as f:
    for line in f:
      head = HLO_COMPUTATION.match(line)
      if head and not line.startswith(" "):
        computation = head.group("name")
        continue
      match = HLO_INSTRUCTION.match(line)
      if not match:
        continue
      target = re.search(r'custom_call_target="([^"]*)"', line)
      op_name = re.search(r'op_name="([^"]*)"', line)
      called = re.search(r"calls=%?([\w.\-]+)", line)
      opcode = match.group("opcode")
      opcodes_in[computation].add(opcode)
      if op_name:
        names_in[computation].append(op_name.group(1))
      instructions[match.group("name")] = (
          opcode + (f" {target.group(1)}" if target else ""),
          op_name.group(1) if op_name else "", called.group(1) if called else "")
  info = {}
  for name, (description, op_name, called) in instructions.items():
    inside = sorted(opcodes_in.get(called, set()) & set(CALLED_OPCODES))
    if called and not op_name:
      stacks = [n.split("/") for n in names_in.get(called, [])]
      op_name = "/".join(os.path.commonprefix(stacks)) if stacks else ""
    info[name] = (" ".join([description] + inside), op_name)
  return info


def load_events(trace_path: str):
  """The trace's complete events and its process and thread names."""
  opener = gzip.open if trace_path.endswith(".gz") else open
  with opener(trace_path, "rt", encoding="utf-8") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  processes, threads = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      processes[e["pid"]] = e["args"]["name"]
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[(e["pid"], e["tid"])] = e["args"]["name"]
  complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
  return complete, processes, threads


def device_events(events, processes, threads):
  """(events, kind): GPU stream events if the trace has any, else XLA:CPU op events."""
  streams = [e for e in events
             if processes.get(e["pid"], "").startswith(DEVICE_PROCESS_PREFIX)
             and threads.get((e["pid"], e["tid"]), "").startswith(STREAM_TRACK_PREFIX)]
  if streams:
    return streams, "GPU stream"
  ops = [e for e in events
         if "hlo_op" in e.get("args", {}) and not e["name"].startswith("end: ")]
  return ops, "XLA:CPU op"


def self_times(events) -> list[float]:
  """Each event's duration minus those of the events directly nested in it on its track."""
  own = [float(e["dur"]) for e in events]
  by_track = collections.defaultdict(list)
  for i, e in enumerate(events):
    by_track[(e["pid"], e["tid"])].append(i)
  for indices in by_track.values():
    indices.sort(key=lambda i: (events[i]["ts"], -events[i]["dur"]))
    stack = []
    for i in indices:
      start = events[i]["ts"]
      while stack and events[stack[-1]]["ts"] + events[stack[-1]]["dur"] <= start:
        stack.pop()
      if stack:
        own[stack[-1]] -= events[i]["dur"]
      stack.append(i)
  return own


def union_us(intervals) -> float:
  """Total length of the union of (start, end) intervals."""
  total, end = 0.0, float("-inf")
  for start, stop in sorted(intervals):
    if stop > end:
      total += stop - max(start, end)
      end = stop
  return total


def op_name_of(event, hlo) -> str:
  args = event.get("args", {})
  for key in ARG_NAME_KEYS:
    if "/" in str(args.get(key, "")):
      return str(args[key])
  return hlo.get(args.get("hlo_op", ""), ("", ""))[1]


def label_of(event, hlo) -> str:
  hlo_op = event.get("args", {}).get("hlo_op", "")
  return " ".join([event["name"], hlo_op, hlo.get(hlo_op, ("", ""))[0]])


def summarize(trace_path: str, window: str = DEFAULT_WINDOW, steps: int | None = None,
              hlo_path: str | None = None) -> dict:
  """Everything the tables print, as a dict (the test reads it)."""
  events, processes, threads = load_events(trace_path)
  hlo = read_hlo(hlo_path) if hlo_path else {}
  device, kind = device_events(events, processes, threads)
  windows = [e for e in events if window and e["name"] == window]
  if windows:
    w = max(windows, key=lambda e: e["dur"])
    start, stop = w["ts"], w["ts"] + w["dur"]
    steps = steps or int(w.get("args", {}).get("steps", 1))
    device = [e for e in device if start <= e["ts"] <= stop]
  elif device:
    start = min(e["ts"] for e in device)
    stop = max(e["ts"] + e["dur"] for e in device)
  else:
    start = stop = 0.0
  steps = steps or 1
  if not device:
    raise ValueError(f"no device events in {trace_path} (window {window!r})")
  own = self_times(device)
  by_category = collections.Counter()
  counts = collections.Counter()
  by_part = collections.defaultdict(collections.Counter)
  other_names = collections.Counter()
  named = 0
  for e, t in zip(device, own):
    cat = category(label_of(e, hlo))
    op_name = op_name_of(e, hlo)
    named += bool(op_name)
    by_category[cat] += t
    counts[cat] += 1
    by_part[part(op_name)][cat] += t
    if cat == OTHER:
      other_names[f"{e['name']} [{e.get('args', {}).get('hlo_op', '')}]"] += t
  busy = union_us((e["ts"], e["ts"] + e["dur"]) for e in device)
  first = min(e["ts"] for e in device)
  last = max(e["ts"] + e["dur"] for e in device)
  wall = stop - start
  return dict(trace=trace_path, kind=kind, events=len(device), named=named,
              tracks=len({(e["pid"], e["tid"]) for e in device}), steps=steps,
              window=window if windows else "", wall_us=wall, busy_us=busy,
              before_us=max(first - start, 0.0), after_us=max(stop - last, 0.0),
              by_category=by_category, counts=counts, by_part=by_part,
              other=other_names.most_common(TOP_OTHER))


def print_tables(s: dict) -> None:
  steps, wall = s["steps"], s["wall_us"]
  ms = lambda us: us / US_PER_MS / steps  # noqa: E731  (per step)
  pct = lambda us: 100 * us / wall if wall else float("nan")  # noqa: E731
  print(f"trace {s['trace']}")
  print(f"{s['events']} {s['kind']} events on {s['tracks']} tracks, {s['named']} with a "
        f"name stack; window {s['window'] or '(first to last device event)'}: {steps} "
        f"steps, wall {wall / US_PER_MS:.2f} ms ({ms(wall):.3f} ms/step)")
  header = f"{'category':<24} {'ms/step':>9} {'% wall':>7} {'ops/step':>9}"
  print(header)
  print("-" * len(header))
  for cat in CATEGORIES:
    t = s["by_category"][cat]
    print(f"{cat:<24} {ms(t):>9.3f} {pct(t):>7.1f} {s['counts'][cat] / steps:>9.1f}")
  total = sum(s["by_category"].values())
  parallel = total > s["busy_us"] + PARALLEL_TOLERANCE_US
  overlap = "   (more than busy: tracks ran in parallel)" if parallel else ""
  print(f"{'device time, summed':<24} {ms(total):>9.3f} {pct(total):>7.1f}{overlap}")
  print(f"{'device busy (union)':<24} {ms(s['busy_us']):>9.3f} {pct(s['busy_us']):>7.1f}")
  gap = wall - s["busy_us"]
  between = gap - s["before_us"] - s["after_us"]
  print(f"{'host gap: wall - busy':<24} {ms(gap):>9.3f} {pct(gap):>7.1f}   (before the first "
        f"device event {s['before_us'] / US_PER_MS:.3f} ms, between "
        f"{between / US_PER_MS:.3f} ms, after the last {s['after_us'] / US_PER_MS:.3f} ms)")
  print()
  short = [c.split("/")[0].split(" ")[0][:11] for c in CATEGORIES]
  header = f"{'part (ms/step)':<20} {'total':>8} {'% wall':>7} " + " ".join(
      f"{c:>11}" for c in short)
  print(header)
  print("-" * len(header))
  parts = [p for p, _ in PART_RULES] + [REST, UNNAMED]
  for p in parts:
    row = s["by_part"].get(p)
    if not row:
      continue
    t = sum(row.values())
    print(f"{p:<20} {ms(t):>8.3f} {pct(t):>7.1f} " + " ".join(
        f"{ms(row[c]):>11.3f}" for c in CATEGORIES))
  if s["other"]:
    print(f"\nlargest '{OTHER}' names (refine CATEGORY_RULES with them):")
    for name, t in s["other"]:
      print(f"  {ms(t):>9.3f} ms/step  {name}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("path", help="a --profile_dir folder or a *.trace.json.gz file")
  parser.add_argument("--window", default=DEFAULT_WINDOW,
                      help="annotation around the profiled steps ('': first to last event)")
  parser.add_argument("--steps", type=int, default=None,
                      help="steps in the window (default: the annotation's steps, else 1)")
  parser.add_argument("--hlo", default=None,
                      help="compiled HLO text for op names (default: the *.hlo.txt under "
                           "a folder path)")
  args = parser.parse_args()
  hlo_path = args.hlo
  if hlo_path is None and os.path.isdir(args.path):
    found = sorted(glob.glob(os.path.join(args.path, "**", "*.hlo.txt"), recursive=True))
    hlo_path = found[0] if found else None
  print_tables(summarize(find_trace(args.path), args.window, args.steps, hlo_path))
  if hlo_path:
    print(f"\nop names from {hlo_path}")


if __name__ == "__main__":
  main()
