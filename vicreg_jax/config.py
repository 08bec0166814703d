"""The complete VICReg configuration tree (ml_collections) with the official defaults.

Recipe files under ``configs/`` start from :func:`base_config` and override what differs.
Every knob used anywhere in the package lives here; code reads it, never hard-codes it.
Values follow the official ``facebookresearch/vicreg`` code (``main_vicreg.py``,
``evaluate.py``) unless a comment says otherwise.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os

import ml_collections

# ImageNet RGB statistics used by the official Normalize transform (pixels in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def view_recipe(*, blur_prob: float, solarize_prob: float) -> ml_collections.ConfigDict:
  """Per-view colour/blur/solarize recipe; probabilities in [0, 1], strengths as torchvision."""
  return ml_collections.ConfigDict(dict(
      flip_prob=0.5,
      jitter_prob=0.8,
      brightness=0.4,
      contrast=0.4,
      saturation=0.2,
      hue=0.1,
      grayscale_prob=0.2,
      blur_prob=blur_prob,
      # Official augmentations.py GaussianBlur: PIL ImageFilter.GaussianBlur(radius=sigma),
      # sigma ~ U[0.1, 2.0] pixels; Pillow runs 3 box-filter passes per axis.
      blur_sigma=(0.1, 2.0),
      blur_passes=3,
      solarize_prob=solarize_prob,
      # PIL ImageOps.solarize(img, 128) on uint8: levels >= 128, i.e. values >= 127.5 / 255
      # before PIL's rounding to uint8.
      solarize_threshold=0.5,
  ))


def augment_recipe(name: str, image_size: int = 224) -> ml_collections.ConfigDict:
  """The two-view augmentation recipe.

  Args:
    name: ``"official"`` (BYOL asymmetric: blur 1.0/0.1, solarize 0.0/0.2),
      ``"symmetric"`` (the paper's appendix: blur 0.5, solarize 0.1 on both views) or
      ``"cifar"`` (crop scale (0.2, 1), no blur, as small-image peers use).
    image_size: side of the square output views in pixels.
  """
  if name == "official":
    view_a, view_b = view_recipe(blur_prob=1.0, solarize_prob=0.0), view_recipe(
        blur_prob=0.1, solarize_prob=0.2)
    crop_scale = (0.08, 1.0)
  elif name == "symmetric":
    view_a = view_recipe(blur_prob=0.5, solarize_prob=0.1)
    view_b = view_recipe(blur_prob=0.5, solarize_prob=0.1)
    crop_scale = (0.08, 1.0)
  elif name == "cifar":
    view_a, view_b = view_recipe(blur_prob=0.0, solarize_prob=0.0), view_recipe(
        blur_prob=0.0, solarize_prob=0.2)
    crop_scale = (0.2, 1.0)
  else:
    raise ValueError(f"Unknown augmentation recipe {name!r}; use 'official', 'symmetric' or 'cifar'.")
  return ml_collections.ConfigDict(dict(
      recipe=name,
      image_size=image_size,
      crop_scale=crop_scale,
      crop_ratio=(3 / 4, 4 / 3),
      mean=IMAGENET_MEAN,
      std=IMAGENET_STD,
      view_a=view_a,
      view_b=view_b,
  ))


# Splits without labels (tfds marks every label -1): evaluation on them would score nothing.
# Maps a dataset name to (its unlabelled splits, the labelled held-out split to use instead).
UNLABELLED_SPLITS = {"imagenet2012": (("test",), "validation"),
                     "stl10": (("unlabelled",), "test")}


# --- Evaluation protocols (linear probe, kNN, fine-tuning) ---------------------------------
# The linear probe is the paper's protocol (App. C.2; official ``evaluate.py`` run with
# ``--lr-head 0.02``); the kNN monitor is the common InstDisc/DINO one (k 20, temperature
# 0.07); semi-supervised fine-tuning is App. C.2's (20 epochs, wd 0, separate rates).

# Fine-tuning rates (backbone, head) of App. C.2 for the standard label fractions.
FINETUNE_RATES = {0.01: (0.03, 0.08), 0.1: (0.01, 0.1)}


def eval_transform(image_size: int = 224, resize_size: int = 256,
                   train_crop: str = "random_resized", pad: int = 4
                   ) -> ml_collections.ConfigDict:
  """Image preprocessing of the supervised protocols (linear probe on images, fine-tuning).

  Args:
    image_size: side of the square crops fed to the encoder, pixels.
    resize_size: evaluation resizes the shorter side to this, then centre-crops
      ``image_size`` (official: 256 then 224; small images: equal sizes, no crop).
    train_crop: ``"random_resized"`` (RandomResizedCrop, bilinear, as the official
      ``evaluate.py``) or ``"pad_random"`` (zero-pad by ``pad`` then a random
      ``image_size`` crop: the CIFAR protocol; needs images of ``image_size`` pixels).
    pad: padding of ``"pad_random"``, pixels.
  """
  return ml_collections.ConfigDict(dict(
      image_size=image_size,
      resize_size=resize_size,
      train_crop=train_crop,
      crop_scale=(0.08, 1.0),     # random_resized: area fraction (official default)
      crop_ratio=(3 / 4, 4 / 3),  # random_resized: aspect w / h
      pad=pad,
      flip_prob=0.5,
  ))


def probe_config() -> ml_collections.ConfigDict:
  """Paper defaults: ``knn`` (k, temperature, query_batch), ``linear`` (the probe's SGD) and
  ``finetune`` (semi-supervised fine-tuning on a label subset)."""
  return ml_collections.ConfigDict(dict(
      knn=dict(
          k=20,
          temperature=0.07,       # votes weighted by exp(cosine similarity / temperature)
          query_batch=256,        # queries per block: memory is query_batch x num_train floats
      ),
      linear=dict(
          lr=0.02,                # not scaled with the batch size (official evaluate.py)
          momentum=0.9,
          weight_decay=1e-6,      # on the weights and the bias, as torch SGD applies it
          batch_size=256,
          epochs=100,             # cosine annealing to 0, stepped once per epoch
          init_std=0.01,          # head weights ~ N(0, init_std), bias 0
          # False: the paper's protocol on augmented images, the encoder run every step;
          # True: the fast path, features of un-augmented images extracted once.
          on_features=False,
      ),
      finetune=dict(
          backbone_lr=FINETUNE_RATES[0.01][0],  # 1% labels; 10%: 0.01 / 0.1
          head_lr=FINETUNE_RATES[0.01][1],
          momentum=0.9,
          weight_decay=0.0,
          batch_size=256,
          epochs=20,              # cosine annealing to 0 of both rates, stepped per epoch
          init_std=0.01,
          subset_file="",         # file of image ids, one per line (SimCLR's 1%/10% lists)
          subset_fraction=0.01,   # without subset_file: this fraction of the train split
          subset_seed=0,
          # BatchNorm statistics in train mode over groups of this many consecutive examples
          # of the batch; 0 = over the global batch (SyncBN, not the official protocol).
          # 32, the official protocol, is the default so that results compare with the
          # paper's: evaluate.py has no SyncBN and gives each of the 8 GPUs of a node
          # 256 / 8 = 32 images, normalised together; the running averages kept are the
          # first group's (DDP broadcasts rank 0's). Same statistics on any device count.
          bn_group_size=32,
      ),
  ))


def audio_recipe() -> ml_collections.ConfigDict:
  """Audio clips and their two views (waveform for branch a, log-mel image for branch b).

  The paper's ESC-50 experiment (Appendix D.2) states only the encoders, AdamW and the
  [0, 1] mel input; these values are ours, sized for CPU demos: 16 kHz, 1 s crops of
  2 s clips, a 25 ms / 10 ms STFT (400 / 160 samples at 16 kHz, the usual speech and
  AudioSet framing) with 64 Slaney mel bands up to the Nyquist frequency.
  """
  return ml_collections.ConfigDict(dict(
      sample_rate=16000,          # Hz; every clip is resampled to it
      clip_seconds=2.0,           # stored clip length (cut or zero-padded at the end)
      crop_seconds_a=1.0,         # view a: random time crop fed as a waveform [n, t, 1]
      crop_seconds_b=1.0,         # view b: random time crop fed as a log-mel [n, mels, frames, 1]
      gain_db=6.0,                # each view's gain drawn uniformly in [-gain_db, +gain_db] dB
      noise_std=0.0,              # white noise added to each view (amplitude units)
      n_fft=400,                  # STFT frame (samples)
      hop_length=160,             # STFT hop (samples)
      n_mels=64,
      fmin=0.0,                   # Hz
      fmax=8000.0,                # Hz, at most sample_rate / 2
      mel_scale="slaney",         # "slaney" (librosa) or "htk" (torchaudio)
      mel_norm="slaney",          # "slaney" (unit-area triangles) or None (peak 1)
      floor=1e-10,                # smallest mel power before the log (librosa's amin)
      top_db=80.0,                # dynamic range kept below each clip's peak (dB)
  ))


def base_config() -> ml_collections.ConfigDict:
  """ImageNet ResNet-50 VICReg with the official hyper-parameters (100-epoch run length)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      arch="resnet50",            # resnet18/34/50/101/152/200
      width_multiplier=1,         # official widths: 1, 2, 4, 5
      base_width=64,              # stage-1 width before the multiplier (tests use 4-16)
      small_stem=False,           # 3x3 stride-1 stem without max-pool for 32-px images
      expander="8192-8192-8192",  # hidden and output widths; last layer has no bias
      spatial_dims=2,             # 2: images [n, h, w, c]; 1: signals [n, t, c]
      shared_branches=True,       # False: two independent encoders (paper Table 5)
      # With shared_branches=False, any field set here overrides branch a's for branch b
      # (e.g. --config.model.branch_b.spatial_dims=1 for a 1-D encoder on raw audio).
      branch_b=ml_collections.ConfigDict(dict(
          arch=ml_collections.config_dict.placeholder(str),
          width_multiplier=ml_collections.config_dict.placeholder(int),
          base_width=ml_collections.config_dict.placeholder(int),
          small_stem=ml_collections.config_dict.placeholder(bool),
          spatial_dims=ml_collections.config_dict.placeholder(int),
      )),
      dtype="bfloat16",           # compute dtype; parameters stay float32
      # How the two views go through shared branches; BatchNorm statistics are per view
      # either way (running averages updated once per view, as the official code).
      # "one_pass": both views stacked into one batch of 2n (one set of kernels, the same
      # numbers to float rounding; needs shared branches and views of one shape);
      # "two_pass": each view in its own pass, as the official code; "auto": one pass where
      # it applies, two passes for separate branches or views of different shapes.
      view_batching="auto",
      # > 0: online linear probe with this many classes on stop-gradient representations
      # of view a, trained alongside (BYOL's monitor); the batches must carry labels.
      online_probe_classes=0,
  ))

  c.loss = ml_collections.ConfigDict(dict(
      sim_coeff=25.0,
      std_coeff=25.0,
      cov_coeff=1.0,
      gamma=1.0,
      eps=1e-4,
      variance_reduction="mean",  # "mean": official code (/2); "sum": paper Eq. 6
      cov_method="auto",          # "auto", "covariance" (d x d) or "gram" (n x n)
      precision="highest",        # covariance matmuls: "highest" (exact f32) or "bf16_3x"
  ))

  c.data = ml_collections.ConfigDict(dict(
      source="tfds",              # "tfds", "folder", "memory", "audio" or "synthetic" (benchmarking)
      name="imagenet2012",        # tfds name; "memory": digits, cifar10, cifar100, stl10, npz;
                                  # "audio": esc50 or folder
      data_dir="",                # tfds data_dir ("" = tfds default)
      path="",                    # image folder (source="folder"), .npz file (name="npz"),
                                  # ESC-50 clone or audio class folder (source="audio")
      test_fold=5,                # audio esc50: the held-out fold (paper: 5); train = the others
      esc10=False,                # audio esc50: only the ESC-10 subset (10 classes)
      test_fraction=0.2,          # audio folder without train/ and test/: share held out per class
      split="train",
      num_examples=0,             # epoch length for schedules; 0 = count the data
      shuffle_buffer=16384,       # tfds: examples mixed per epoch (folders: all file names)
      prefetch_batches=2,         # host batches tf.data prepares ahead
      device_prefetch=2,          # global batches transferred to the devices ahead
      threads=0,                  # tf.data private thread pool size; 0 = AUTOTUNE
  ))
  c.augment = augment_recipe("official")
  c.audio = audio_recipe()  # read by the audio data only

  c.optim = ml_collections.ConfigDict(dict(
      # Per 256 examples (peak lr = base_lr * batch / 256). 0.3 at batch 2048 for the
      # 100-epoch runs this config describes: paper App. C.4 and Table 13 (base lr per batch
      # size at 100 epochs: 128 -> 0.8, 256 -> 0.5, 512 -> 0.4, 1024-4096 -> 0.3). The
      # 1000-epoch run uses 0.2 (paper Sec. 4.2; official main_vicreg.py --base-lr default).
      base_lr=0.3,
      weight_decay=1e-6,
      momentum=0.9,
      trust_coefficient=1e-3,
      name="lars",                # "lars" (official) or "adamw" (the paper's ESC-50 runs)
      warmup_epochs=10,
      end_lr_ratio=1e-3,          # final lr = end_lr_ratio * peak lr
  ))

  c.batch_size = 2048             # global, over all devices and hosts
  c.epochs = 100
  c.num_train_steps = 0           # 0 = epochs * steps_per_epoch

  c.distributed = ml_collections.ConfigDict(dict(
      mode="none",                # "none", "auto" (pods/SLURM) or "manual"
      coordinator_address="",
      num_processes=1,
      process_id=0,
      # Seconds without a heartbeat before JAX's coordination service declares a process
      # dead and stops the others with an error (JAX's default, 100). Lower it to learn of a
      # lost host sooner; keep it above the longest stall of a live host.
      heartbeat_timeout_s=100,
  ))

  # How the training state is laid out over the devices' data axis. Off (the default): the
  # optimizer state is replicated like the parameters, and each device updates every
  # parameter. On (ZeRO stage 1): every optimizer-state leaf of at least
  # shard_min_elements elements is split over the devices along its largest axis that the
  # device count divides; each device reduce-scatters the gradients, updates its slice and
  # the parameters are all-gathered (same bytes as the all-reduce; 1/N of the state's memory
  # and of the update's work). Parameters stay replicated for the forward pass. The result
  # equals the replicated step up to float32 reduction order (README: Scaling to pods).
  c.parallel = ml_collections.ConfigDict(dict(
      shard_optimizer_state=False,
      shard_min_elements=2**16,   # smaller leaves (biases, BN, the count) stay replicated
  ))

  c.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=1000,
      max_to_keep=3,
      async_save=True,
  ))

  c.log_every_steps = 50
  c.nonfinite = "stop"                  # "stop" or "skip" a step whose loss/gradient is not finite
  # jax.transfer_guard level around the training loop: "allow", or "log" / "disallow" to
  # find implicit host<->device copies (every intended one is an explicit device_put/get).
  c.transfer_guard = "allow"
  # JAX's persistent compilation cache for the command-line programs, so that a resumed or
  # repeated run loads its compiled steps instead of compiling them again: "auto" =
  # $JAX_COMPILATION_CACHE_DIR if set, else ~/.cache/vicreg_jax/xla; a folder (local or
  # gs://); "" = off.
  c.compilation_cache_dir = "auto"

  probe = probe_config()          # paper's kNN and linear-probe protocol (App. C.2)
  c.eval = ml_collections.ConfigDict(dict(
      knn=probe.knn,
      linear=probe.linear,
      finetune=probe.finetune,
      transform=eval_transform(), # train/eval crops of the supervised protocols
      train_split="train",        # labelled examples the kNN bank / probe / fine-tune use
      # Held-out split the accuracies are measured on. ImageNet: "validation", as the
      # official evaluate.py (tfds imagenet2012's "test" split has no labels: all -1).
      split="validation",
      # An .npz without '{split}_images' for the held-out split: False refuses it; True
      # evaluates on the training arrays ('images'/'labels'), i.e. reports train accuracy.
      allow_train_as_test=False,
      compare_random=False,       # after training: kNN/linear probe vs a random encoder
      branch="a",                 # which branch's encoder is evaluated (separate branches:
                                  # audio a = waveform, b = log-mel)
      feature_batch=512,          # images per forward pass when extracting features
      knn_every_steps=0,          # kNN monitor during pretraining every N steps; 0 = off
      monitor_examples=10000,     # kNN monitor: at most this many train and test images
      # Collapse diagnostics during pretraining every N steps (0 = off): effective rank
      # (RankMe, Garrido et al. 2023), rank fraction, mean |correlation| and std of branch
      # a's representation and embedding on a fixed probe batch of train-split eval crops.
      diagnostics_every_steps=0,
      diagnostics_examples=512,   # the probe batch (a multiple of the device count)
      diagnostics_threshold=1e-3, # rank fraction: singular values above this x the largest
  ))
  return c


def load_config_file(spec: str, **overrides) -> ml_collections.ConfigDict:
  """Loads ``path/to/recipe.py[:variant]`` like ``--config`` does, then sets dotted overrides.

  Example: ``load_config_file("configs/demo.py:tiny", **{"optim.base_lr": 0.3})``.

  Raises:
    KeyError when an override names a key the recipe does not have (a typo would otherwise
    add a new key that nothing reads), with the closest existing names.
  """
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path} does not exist.")
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for name in (*parents, leaf):
      if not isinstance(node, ml_collections.ConfigDict):
        raise KeyError(f"{key!r}: in {path}, {key.partition('.' + name)[0]} is a value, "
                       "not a group of keys.")
      if name not in node:
        close = difflib.get_close_matches(name, list(node.keys()), n=3)
        raise KeyError(f"{key!r}: {path} has no key {name!r} there"
                       + (f"; did you mean {close}?" if close else f"; it has {sorted(node)}."))
      if name != leaf:
        node = node[name]
    node[leaf] = value
  return config


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(f"Invalid config: {message}")


def validate(c: ml_collections.ConfigDict) -> None:
  """Checks values that would otherwise fail late (after compiling) or silently misbehave.

  Raises:
    ValueError naming the offending ``--config.<key>`` and what to set instead.
  """
  _require(c.batch_size >= 2, f"--config.batch_size={c.batch_size}; VICReg needs >= 2 "
           "samples per step (variance and covariance are batch statistics).")
  _require(c.epochs > 0 or c.num_train_steps > 0,
           "set --config.epochs or --config.num_train_steps to a positive number.")
  _require(c.data.source in ("tfds", "folder", "memory", "audio", "synthetic"),
           f"--config.data.source={c.data.source!r}; use 'tfds', 'folder', 'memory', "
           "'audio' or 'synthetic'.")
  _require(c.optim.name in ("lars", "adamw"),
           f"--config.optim.name={c.optim.name!r}; use 'lars' or 'adamw'.")
  _require(c.data.shuffle_buffer > 0 and c.data.device_prefetch >= 0,
           "--config.data.shuffle_buffer must be > 0 and --config.data.device_prefetch >= 0.")
  _require(c.data.source != "folder" or bool(c.data.path),
           "--config.data.source=folder needs --config.data.path=<folder of class sub-folders>.")
  _require(c.model.dtype in ("float32", "bfloat16", "float16"),
           f"--config.model.dtype={c.model.dtype!r}; use 'float32', 'bfloat16' or 'float16'.")
  _require(c.loss.variance_reduction in ("mean", "sum"),
           f"--config.loss.variance_reduction={c.loss.variance_reduction!r}; use 'mean' "
           "(official code) or 'sum' (paper).")
  _require(c.loss.cov_method in ("auto", "covariance", "gram"),
           f"--config.loss.cov_method={c.loss.cov_method!r}; use 'auto', 'covariance' or 'gram'.")
  _require(c.transfer_guard in ("allow", "log", "disallow"),
           f"--config.transfer_guard={c.transfer_guard!r}; use 'allow', 'log' or 'disallow'.")
  _require(c.nonfinite in ("stop", "skip"),
           f"--config.nonfinite={c.nonfinite!r}; use 'stop' or 'skip'.")
  _require(isinstance(c.parallel.shard_optimizer_state, bool),
           f"--config.parallel.shard_optimizer_state={c.parallel.shard_optimizer_state!r}; "
           "use True or False.")
  _require(isinstance(c.parallel.shard_min_elements, int)
           and not isinstance(c.parallel.shard_min_elements, bool)
           and c.parallel.shard_min_elements >= 1,
           f"--config.parallel.shard_min_elements={c.parallel.shard_min_elements!r} must be "
           "an integer >= 1 (optimizer-state leaves with fewer elements stay replicated).")
  _require(c.checkpoint.every_steps > 0 and c.checkpoint.max_to_keep > 0,
           "--config.checkpoint.every_steps and --config.checkpoint.max_to_keep must be > 0.")
  _require(c.log_every_steps > 0, "--config.log_every_steps must be > 0.")
  _require(c.model.view_batching in ("auto", "one_pass", "two_pass"),
           f"--config.model.view_batching={c.model.view_batching!r}; use 'auto', 'one_pass' "
           "or 'two_pass'.")
  _require(c.model.view_batching != "one_pass" or c.model.shared_branches,
           "--config.model.view_batching=one_pass stacks both views through one shared "
           "branch; with --config.model.shared_branches=False use auto or two_pass.")
  _require(c.model.online_probe_classes >= 0,
           "--config.model.online_probe_classes must be >= 0 (0 = no online probe).")
  _require(not c.model.online_probe_classes or c.data.source in ("memory", "synthetic"),
           "--config.model.online_probe_classes needs labels with the view pairs, which the "
           "in-memory and synthetic sources provide; use --config.data.source=memory or "
           "set it to 0 (the kNN monitor, --config.eval.knn_every_steps, works with any "
           "source).")
  validate_numbers(c)
  validate_branch_inputs(c)
  validate_eval(c.eval)
  validate_eval_splits(c)
  for name in ("view_a", "view_b"):
    view = c.augment[name]
    for key in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
      _require(0.0 <= view[key] <= 1.0,
               f"--config.augment.{name}.{key}={view[key]} is not a probability in [0, 1].")


def validate_branch_inputs(c: ml_collections.ConfigDict) -> None:
  """Each branch's encoder rank matches what the data source yields: image sources yield
  ``[n, h, w, 3]`` for both branches (2-D encoders); ``data.source=audio`` yields a waveform
  ``[n, t, 1]`` for branch a (1-D encoder) and a log-mel image ``[n, mels, frames, 1]`` for
  branch b (2-D encoder), so the branches must be separate. Refused here instead of failing
  with a rank error inside the compiled step."""
  m = c.model
  branch_b = m.get("branch_b")
  dims_b = branch_b.get("spatial_dims") if branch_b is not None else None
  dims = {"model.spatial_dims": m.spatial_dims}
  if dims_b is not None:
    dims["model.branch_b.spatial_dims"] = dims_b
  for key, value in dims.items():
    _require(value in (1, 2), f"--config.{key}={value}; use 2 (images) or 1 (signals).")
  if c.data.source == "audio":
    _require(c.data.name in ("esc50", "folder") and bool(c.data.path),
             f"--config.data.source=audio needs --config.data.name=esc50|folder (got "
             f"{c.data.name!r}) and --config.data.path=<ESC-50 clone or class folder>.")
    _require(m.spatial_dims == 1 and not m.shared_branches and dims_b == 2,
             "--config.data.source=audio feeds branch a a waveform [n, t, 1] and branch b a "
             "log-mel image: set --config.model.spatial_dims=1, "
             "--config.model.shared_branches=False and --config.model.branch_b.spatial_dims=2 "
             f"(got {m.spatial_dims}, {m.shared_branches}, {dims_b}; configs/audio_demo.py "
             "sets them).")
    _require(c.eval.knn_every_steps == 0 and c.eval.diagnostics_every_steps == 0
             and not m.online_probe_classes,
             "the kNN monitor, the diagnostics and the online probe read images; with "
             "--config.data.source=audio set --config.eval.knn_every_steps=0, "
             "--config.eval.diagnostics_every_steps=0 and --config.model.online_probe_classes=0 "
             "(evaluate after pretraining instead).")
    return
  for key, value in dims.items():
    _require(value == 2, f"--config.{key}={value} builds a 1-D encoder, but "
             f"--config.data.source={c.data.source!r} yields images [n, h, w, 3]; set "
             f"--config.{key}=2 (or leave model.branch_b.spatial_dims unset), or use "
             "--config.data.source=audio for a waveform branch.")


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_numbers(c: ml_collections.ConfigDict) -> None:
  """Signs and ranges of the optimiser, run length, model sizes and loss (before compiling).

  A negative learning rate or weight decay, a momentum of 1 or a width of 0 would otherwise
  train nonsense silently or fail late inside the compiled step.
  """
  o = c.optim
  _require(_finite(o.base_lr) and o.base_lr > 0,
           f"--config.optim.base_lr={o.base_lr} must be a positive number (the paper uses "
           "0.2-0.3 at batch 2048, scaled by batch/256).")
  _require(_finite(o.weight_decay) and o.weight_decay >= 0,
           f"--config.optim.weight_decay={o.weight_decay} must be >= 0 (official: 1e-6).")
  _require(_finite(o.momentum) and 0 <= o.momentum < 1,
           f"--config.optim.momentum={o.momentum} must be in [0, 1) (official: 0.9).")
  _require(_finite(o.trust_coefficient) and o.trust_coefficient > 0,
           f"--config.optim.trust_coefficient={o.trust_coefficient} must be > 0 (official: "
           "1e-3).")
  _require(_finite(o.warmup_epochs) and o.warmup_epochs >= 0,
           f"--config.optim.warmup_epochs={o.warmup_epochs} must be >= 0.")
  _require(_finite(o.end_lr_ratio) and 0 <= o.end_lr_ratio <= 1,
           f"--config.optim.end_lr_ratio={o.end_lr_ratio} must be in [0, 1].")
  _require(c.epochs >= 0 and c.num_train_steps >= 0,
           f"--config.epochs={c.epochs} and --config.num_train_steps={c.num_train_steps} "
           "must be >= 0 (num_train_steps 0 = epochs x steps per epoch).")
  m = c.model
  _require(m.base_width > 0 and m.width_multiplier > 0,
           f"--config.model.base_width={m.base_width} and --config.model.width_multiplier="
           f"{m.width_multiplier} must be > 0 (official: 64 and 1).")
  loss = c.loss
  for key in ("sim_coeff", "std_coeff", "cov_coeff"):
    _require(_finite(loss[key]) and loss[key] >= 0,
             f"--config.loss.{key}={loss[key]} must be >= 0 (official: 25, 25, 1).")
  _require(_finite(loss.eps) and loss.eps > 0 and _finite(loss.gamma) and loss.gamma > 0,
           f"--config.loss.eps={loss.eps} and --config.loss.gamma={loss.gamma} must be > 0.")
  probe, tune = c.eval.linear, c.eval.finetune
  _require(_finite(probe.lr) and probe.lr > 0 and _finite(tune.head_lr) and tune.head_lr > 0
           and _finite(tune.backbone_lr) and tune.backbone_lr >= 0,
           "--config.eval.linear.lr and --config.eval.finetune.head_lr must be > 0, "
           "--config.eval.finetune.backbone_lr >= 0.")
  for name, e in (("linear", probe), ("finetune", tune)):
    _require(0 <= e.momentum < 1 and e.weight_decay >= 0,
             f"--config.eval.{name}.momentum must be in [0, 1) and --config.eval.{name}."
             "weight_decay >= 0.")


def validate_eval_splits(c: ml_collections.ConfigDict) -> None:
  """Refuses evaluation splits known to carry no labels (``UNLABELLED_SPLITS``)."""
  unlabelled, instead = UNLABELLED_SPLITS.get(c.data.name, ((), ""))
  for key in ("split", "train_split"):
    _require(c.eval[key] not in unlabelled,
             f"--config.eval.{key}={c.eval[key]!r}: {c.data.name}'s {c.eval[key]!r} split has "
             f"no labels, so every accuracy would be 0; use --config.eval.{key}={instead}.")


def validate_eval(e: ml_collections.ConfigDict) -> None:
  """Checks ``config.eval`` (monitor, protocols, crops); raises ValueError naming the key."""
  _require(e.branch in ("a", "b"), f"--config.eval.branch={e.branch!r}; use 'a' or 'b'.")
  _require(e.knn_every_steps >= 0 and e.monitor_examples >= 0,
           "--config.eval.knn_every_steps and --config.eval.monitor_examples must be >= 0 "
           "(0 = off / all examples).")
  _require(e.diagnostics_every_steps >= 0 and e.diagnostics_examples >= 2
           and 0 < e.diagnostics_threshold < 1,
           "--config.eval.diagnostics_every_steps must be >= 0 (0 = off), "
           "--config.eval.diagnostics_examples >= 2 and --config.eval.diagnostics_threshold "
           "in (0, 1).")
  _require(e.knn.k > 0 and e.knn.temperature > 0 and e.feature_batch > 0,
           "--config.eval.knn.k, --config.eval.knn.temperature and --config.eval.feature_batch "
           "must be > 0.")
  for name in ("linear", "finetune"):
    _require(e[name].epochs > 0 and e[name].batch_size > 0,
             f"--config.eval.{name}.epochs and --config.eval.{name}.batch_size must be > 0.")
  tune = e.finetune
  _require(tune.bn_group_size == 0 or (
      tune.bn_group_size > 0 and tune.batch_size % tune.bn_group_size == 0),
           f"--config.eval.finetune.bn_group_size={tune.bn_group_size} must be 0 (statistics "
           f"over the global batch) or divide --config.eval.finetune.batch_size="
           f"{tune.batch_size} (official: 32 of 256).")
  _require(0.0 < e.finetune.subset_fraction <= 1.0,
           f"--config.eval.finetune.subset_fraction={e.finetune.subset_fraction} must be in "
           "(0, 1].")
  t = e.transform
  _require(t.train_crop in ("random_resized", "pad_random"),
           f"--config.eval.transform.train_crop={t.train_crop!r}; use 'random_resized' or "
           "'pad_random'.")
  _require(0 < t.image_size <= t.resize_size,
           f"--config.eval.transform.image_size={t.image_size} must be > 0 and <= resize_size="
           f"{t.resize_size} (evaluation resizes, then centre-crops).")
