"""The typed, validated experiment configuration.

``load_config(path, overrides)`` builds one :class:`ExperimentConfig` from an optional YAML
file and ``key=value`` overrides with dotted keys (``fl.lr=1e-3``). Every bad value is
rejected here, before Ray starts, with a :class:`ConfigError` naming the key, the value and
what is allowed. Each field documents itself where it is declared.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names key, value and what is allowed."""


def _spec(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
          max: float | None = None, min_exclusive: bool = False, factory: Any = None) -> Any:
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DATA_SOURCES = ("synthetic", "folder", "reds", "vid4", "vimeo90k", "kinetics")
DEGRADATIONS = ("bicubic", "blur", "h264", "blur-h264", "hevc", "fca2-mix", "vsrgan")
STRATEGIES = ("fedavg", "fedprox", "scaffold", "fedvsr", "fedavg-dwt", "fedvsr-gla", "fedvsr-ala")
PARTITIONS = ("random", "by-class", "quantity-skew", "dirichlet", "by-degradation")
ALPHA_DECAYS = ("none", "linear", "power")
HIFR_MODES = ("2d", "3d")
MIXINGS = ("none", "hellinger")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "multistep")
LR_CLOCKS = ("round", "local")
AUGMENTS = ("auto", "none", "flip", "flip-rot")
EVAL_SOURCES = ("holdout", "split", "folder")
SYNTHETIC_CONTENT = ("natural", "procedural", "all")  # fedvsr.data.synthetic.CONTENT
#: the data.source values with a standard test split for eval.source = split
SPLIT_SOURCES = ("reds", "vimeo90k", "kinetics")
EVAL_CHANNELS = ("y", "rgb", "y+rgb")
DEADLINE_UNITS = ("steps", "seconds")
DEADLINE_ACTIONS = ("cut", "drop")
#: the largest seed (``seed``, ``data.seed``): a signed 64-bit integer, what Parquet and JSON readers, numpy's
#: SeedSequence and ``torch.manual_seed`` (which takes < 2^64) all hold; replicates use seed + r, so they must fit too
SEED_MAX = 2**63 - 1
#: the most replicates of one experiment (``fedvsr simulate --replicates``, a sweep spec's ``replicates``): a 95%
#: interval is already tight at 30; each replicate is a whole run folder
MAX_REPLICATES = 1000
KERNELS = ("native", "portable")  # fedvsr.platform.environment


@dataclass
class ModelConfig:
    name: str = _spec("efvsr", "registered model family (`fedvsr models` lists them)")
    preset: str = _spec("small", "size preset of the family")
    options: dict = _spec(None, "constructor arguments overriding the preset's", factory=dict)


@dataclass
class DataConfig:
    seed: int = _spec(0, "data seed: the built-in videos, which videos are held out for evaluation, the "
                      "partition among clients and the random degradation draws; fixed while replicates vary "
                      "the training seed (seed); at most 2^63 - 1 (a signed 64-bit integer, as Parquet stores "
                      "it)", min=0, max=SEED_MAX)
    source: str = _spec("synthetic", "where videos come from: synthetic (built-in); folder (video files and frame "
                        "folders under data.root, label = the folder under the root); reds (train_sharp/<clip>/, "
                        "train split = all but REDS4); vid4 (GT/<clip>/, a test set); vimeo90k (vimeo_septuplet/"
                        "sequences with sep_trainlist.txt); kinetics (<class>/<video>.mp4, or train/ and val/ "
                        "above the classes; label = the class). Pre-made LR frames (REDS train_sharp_bicubic/X4, "
                        "BIx4 / BDx4, vimeo_septuplet_matlabLRx4) replace the resampling of the HR frames when "
                        "present", choices=DATA_SOURCES)
    root: str = _spec("", "dataset folder (folder and dataset sources); synthetic: the folder holding the built "
                          "videos, one synthetic-<key> folder per data.seed and size (default: $FEDVSR_CACHE or "
                          "~/.cache/fedvsr)")
    degradation: str = _spec("bicubic", "how LR videos are made from HR videos: bicubic (antialiased, MATLAB-"
                             "like); blur (Gaussian blur of data.sigma + every scale-th pixel); h264 (blur + H.264 "
                             "at data.crf: FCA2; blur-h264 is the same); hevc (bicubic + HEVC at data.qp, no "
                             "B-frames: FCVSR's low-delay); fca2-mix (FCA2's training mix: blur, then H.264 at a "
                             "random CRF for a data.mix_compressed fraction of the videos); vsrgan (bicubic + "
                             "the VSRGAN degradation suite, data.vsrgan_*). Random draws depend on (data.seed, video)",
                             choices=DEGRADATIONS)
    crf: int = _spec(25, "h264: H.264 constant rate factor (FCA2 paper: 15, 25, 35)", min=0, max=51)
    qp: int = _spec(32, "hevc: HEVC quantisation parameter (FCVSR paper: 22, 27, 32, 37)", min=0, max=51)
    sigma: float = _spec(1.5, "blur, h264, fca2-mix: std of the Gaussian blur before subsampling, in HR pixels "
                         "(FCA2 paper: 1.5; BasicSR's BD and Vid4 BDx4: 1.6)", min=0.1, max=10.0)
    mix_crf_min: int = _spec(15, "fca2-mix: lowest CRF of the compressed videos (CRF drawn uniformly from the "
                             "integers data.mix_crf_min .. data.mix_crf_max; FCA2 tests 15 / 25 / 35)", min=0, max=51)
    mix_crf_max: int = _spec(35, "fca2-mix: highest CRF of the compressed videos", min=0, max=51)
    mix_compressed: float = _spec(0.5, "fca2-mix: probability that a video is compressed (FCA2: 50% "
                                  "uncompressed, 50% compressed)", min=0.0, max=1.0)
    vsrgan_ops: str = _spec("blur,noise,contrast,frequency,cutblur,diffusion,content,adaptive,jpeg",
                            "vsrgan: comma-separated operations of the suite (VSRGAN paper 3.1.2), applied in "
                            "this order: blur, noise, contrast (and brightness), frequency (Haar-guided), cutblur, "
                            "diffusion, content (-aware), adaptive, jpeg")
    vsrgan_prob: float = _spec(0.5, "vsrgan: probability each operation is applied to a video (the paper gives "
                               "none; ours)", min=0.0, max=1.0)
    vsrgan_sigma: float = _spec(1.5, "vsrgan: largest Gaussian blur sigma in LR pixels (blur: U(0.2, this); "
                                "content-aware: U(0.5, 2 x this); adaptive: U(0.3, this / 2) per iteration; "
                                "the paper gives no number; ours)", min=0.2, max=5.0)
    vsrgan_noise: float = _spec(10.0, "vsrgan: largest Gaussian noise std in 8-bit levels (std ~ U(0, this); ours)",
                                min=0.0, max=50.0)
    vsrgan_brightness: float = _spec(0.1, "vsrgan: largest brightness shift, a fraction of the range (shift ~ "
                                     "U(-this, this); ours)", min=0.0, max=0.5)
    vsrgan_contrast: float = _spec(0.2, "vsrgan: contrast factor ~ U(1 - this, 1 + this) (ours)", min=0.0,
                                   max=0.9)
    vsrgan_freq_gain: float = _spec(0.5, "vsrgan: the Haar detail sub-bands are multiplied by U(1 - this, "
                                    "1 + this) (ours)", min=0.0, max=1.0)
    vsrgan_cutblur: float = _spec(0.5, "vsrgan: largest CutBlur rectangle side, a fraction of the frame side "
                                  "(sides ~ U(0.25, this); the region is average-pooled by 2-4 and bilinearly "
                                  "upsampled; ours)", min=0.1, max=1.0)
    vsrgan_diffusion_steps: int = _spec(4, "vsrgan: most blur iterations of diffusion (sigma U(0.3, 0.7) each) "
                                        "and adaptive (1 .. this; ours)", min=1, max=20)
    vsrgan_jpeg_quality: int = _spec(30, "vsrgan: lowest JPEG quality (quality ~ integers in [this, 95]; ours)",
                                     min=1, max=95)
    lr_cache: str = _spec("", "folder of the on-disk cache of degraded LR videos, shared by a node's workers "
                          "(each video is degraded once per node); '' = $FEDVSR_CACHE/lr (~/.cache/fedvsr/lr), "
                          "'none' = no cache")
    hr_cache_mb: float = _spec(64.0, "decoded HR videos of at most this many MiB (frames x H x W x 3 bytes) are kept "
                               "as arrays in the same cache folder, so a node decodes each once (a larger one is "
                               "decoded on every load: REDS' 100 frames of 720p are 264 MiB); 0 = never",
                               min=0.0, max=1048576.0)
    scale: int = _spec(4, "super-resolution factor (1: LR = HR, for pretraining an autoencoder GT -> GT, "
                       "FCA2's mode = pretrain)", choices=(1, 2, 3, 4))
    clip_frames: int = _spec(0, "frames per training clip; 0 = the model's number of input frames (the papers "
                             "train on 5 to 30)", min=0, max=1000)
    patch: int = _spec(16, "LR training crop size in pixels (HR crop = patch * scale; the papers crop 64 LR pixels); "
                       "the default experiment's recipe: 16 (a quarter of the built-in 32x32 LR frames, so four "
                       "times the crops for the same compute as whole frames)", min=4, max=1024)
    samples_per_video: int = _spec(64, "random clips drawn from each video per local epoch (default experiment: 3 "
                                   "videos x 64 = 192 clips, 48 local steps a client a round at fl.batch_size 4)",
                                   min=1, max=100000)
    augment: str = _spec("auto", "training-clip augmentation: flip (horizontal, vertical, temporal reversal), "
                         "flip-rot (flip plus 90-degree rotations: all 8 orientations), none; auto = flip-rot for "
                         "a rotation-safe model (every shipped family), else flip", choices=AUGMENTS)
    dark_threshold: float = _spec(0.0, "VSRGAN's dark-patch elimination: a training crop whose HR mean RGB (0..1, "
                                  "all its frames) is below this is redrawn (seeded; the brightest of 11 draws "
                                  "when all are dark); the paper gives no value; 0 = keep every crop", min=0.0,
                                  max=1.0)
    videos: int = _spec(28, "synthetic: number of videos generated (clients + held-out); a local run also checks "
                        "that they fit the machine's memory and disk before Ray starts", min=2, max=1000000)
    frames: int = _spec(16, "synthetic: frames per video", min=1, max=10000)
    height: int = _spec(128, "synthetic: HR frame height (at most 8192, DCI 8K)", min=16, max=8192)
    width: int = _spec(128, "synthetic: HR frame width (at most 8192, DCI 8K)", min=16, max=8192)
    content: str = _spec("natural", "synthetic: the content classes, video k of class k mod their number: natural "
                         "(scikit-image's photographs under a pan, a zoom, a roll, and textures under a hand-held "
                         "moving crop); procedural (gratings, checkerboards, 1/f noise with objects, waves); all "
                         "(the eight)", choices=SYNTHETIC_CONTENT)
    segment_frames: int = _spec(0, "cut every client video into segments of this many frames and partition the "
                                "segments (a shorter last segment is dropped); evaluation videos stay whole; "
                                "0 = whole videos", min=0, max=10000)


@dataclass
class FLConfig:
    strategy: str = _spec("fedavg", "federated strategy", choices=STRATEGIES)
    clients: int = _spec(8, "number of simulated clients", min=1, max=100000)
    clients_per_round: int = _spec(4, "clients sampled each round", min=1, max=100000)
    min_clients: int = _spec(1, "a round in which fewer sampled clients train (the others dropped: unreadable data, "
                             "dropout, deadline, lost workers) fails: recorded, no model update, and the run stops "
                             "with an error, keeping the last good round's checkpoint; 0 = never (such a round "
                             "keeps the global model and the run goes on)", min=0, max=100000)
    rounds: int = _spec(20, "communication rounds (the FedVSR paper runs 100; at most 100000)", min=1, max=100000)
    local_epochs: int = _spec(1, "local epochs per round", min=1, max=1000)
    batch_size: int = _spec(4, "local mini-batch size in clips (FCVSR: 8; small batches, many steps: the default "
                            "experiment gains more from local steps than from larger batches; at most 4096)", min=1,
                            max=4096)
    lr: float = _spec(2e-3, "client learning rate (the papers' Adam rates are 1e-4 to 2e-4; at most 10, which no "
                      "optimizer here survives)", min=0.0, min_exclusive=True, max=10.0)
    optimizer: str = _spec("adam", "client optimizer (fresh each round)", choices=OPTIMIZERS)
    lr_schedule: str = _spec("cosine", "learning-rate schedule: constant; cosine (annealing to fl.lr_min over "
                             "the clock's horizon: FCA2, VRT/RVRT; the default, over the rounds, so the run settles "
                             "by its last rounds); multistep (times fl.lr_gamma at each of "
                             "fl.lr_milestones: FCVSR halves at 2K, 8K, 12K of 30K)", choices=LR_SCHEDULES)
    lr_clock: str = _spec("round", "what the schedule counts: round (global round t-1 of fl.rounds; one rate "
                          "for a whole round) or local (the client's local step within the round, of all its "
                          "steps that round; restarts each round, as the optimizer does)", choices=LR_CLOCKS)
    lr_warmup: int = _spec(0, "linear warm-up over the first N clock units (rate * (i+1)/N)", min=0, max=1000000)
    lr_min: float = _spec(0.0, "cosine: the rate reached at the end of the horizon", min=0.0, max=10.0)
    lr_milestones: list = _spec(None, "multistep: clock positions (0-based, increasing) where the rate is "
                                "multiplied by fl.lr_gamma", factory=list)
    lr_gamma: float = _spec(0.5, "multistep: factor at each milestone", min=0.0, min_exclusive=True, max=10.0)
    clip_grad_norm: float = _spec(0.0, "clip each optimizer's gradients to this total L2 norm before its "
                                  "step (after SCAFFOLD's correction); 0 = off", min=0.0, max=1e6)
    partition: str = _spec("random", "how videos are split among clients: random ('less heterogeneous'), "
                           "by-class (one class per client, 'more heterogeneous'), quantity-skew, dirichlet, "
                           "by-degradation (random's split, and each client's LR videos from its own device: "
                           "bicubic, blur of sigma 1.0-2.0, H.264 at CRF 18-35, HEVC at QP 22-37 in turn over the "
                           "clients, drawn from data.seed; evaluation video k gets kind k mod 4 at the middle of "
                           "its range; data.degradation stays bicubic)", choices=PARTITIONS)
    dirichlet_beta: float = _spec(0.5, "concentration of the quantity-skew / dirichlet partitions (large = "
                                  "even)", min=0.0, min_exclusive=True, max=1e6)
    mu: float = _spec(0.001, "FedProx: weight of the proximal term (mu/2) * squared distance to the global "
                      "weights (FedVSR paper: any mu above 1e-3 hurts VSR training; FedProx's grid ends at 1)", min=0.0,
                      max=1000.0)
    server_lr: float = _spec(1.0, "SCAFFOLD: global step size eta_g", min=0.0, min_exclusive=True, max=100.0)
    lambda_vsr: float = _spec(1.0, "FedVSR: weight of the model's own loss L_VSR", min=0.0, max=1e6)
    lambda_hifr: float = _spec(1.0, "FedVSR: weight of the DWT high-frequency loss L_HiFr", min=0.0, max=1e6)
    hifr_mode: str = _spec("2d", "FedVSR: DWT of L_HiFr per frame (2d) or over (T, H, W) (3d)", choices=HIFR_MODES)
    hifr_eps: float = _spec(1e-3, "FedVSR: Charbonnier epsilon of L_HiFr (the authors' code: about 3.2e-5)",
                            min=0.0, min_exclusive=True, max=1.0)
    alpha: float = _spec(1.0, "FedVSR: exponent strength of the loss-aware weights (1/L_i)^a_t", min=0.0,
                         max=100.0)
    alpha_decay: str = _spec("linear", "FedVSR: none (greedy), linear a_t = alpha(1-t/T), power alpha^(1-t/T)",
                             choices=ALPHA_DECAYS)
    mixing: str = _spec("none", "FedVSR: 'hellinger' blends loss-aware and uniform weights (authors' code)",
                        choices=MIXINGS)
    dropout: float = _spec(0.0, "probability that a sampled client fails to report (drawn per seed, round and "
                           "client; recorded as dropped, never trained)", min=0.0, max=1.0)
    deadline: float = _spec(0.0, "per-client deadline in fl.deadline_unit, scaled by the client's speed (see "
                            "fl.stragglers); a client that cannot finish is cut or dropped (fl.deadline_action); "
                            "0 = none", min=0.0, max=1e9)
    deadline_unit: str = _spec("steps", "steps (local steps of a speed-1 client: seeded, reproducible) or seconds "
                               "(wall clock of the worker: depends on the hardware)", choices=DEADLINE_UNITS)
    deadline_action: str = _spec("cut", "cut (aggregate the steps done by the deadline: FedProx's partial work) or "
                                 "drop (leave the late client out: FedAvg's rule)", choices=DEADLINE_ACTIONS)
    stragglers: float = _spec(0.0, "spread of client speeds: client i runs at speed exp(sigma z_i), z_i ~ N(0, 1) "
                              "drawn once per client from the seed; its deadline budget is fl.deadline x speed; "
                              "0 = every client at speed 1; at most 10 (speeds e^-40 .. e^40)", min=0.0,
                              max=10.0)


@dataclass
class PlatformConfig:
    workers: int = _spec(2, "long-lived worker actors training clients; on a local Ray, workers x "
                         "cpus_per_worker may not exceed the machine's CPUs (see platform.oversubscribe)", min=1,
                         max=10000)
    cpus_per_worker: float = _spec(1.0, "CPUs reserved per worker (also its torch threads)", min=0.0,
                                   min_exclusive=True, max=1024.0)
    oversubscribe: bool = _spec(False, "local Ray only: allow platform.workers x platform.cpus_per_worker above the "
                                "machine's CPUs (Ray is then told it has that many; the workers share the cores and "
                                "each runs slower; said on the console)")
    gpus_per_worker: float = _spec(0.0, "GPUs per worker; fractions share a GPU", min=0.0, max=8.0)
    address: str = _spec("", "Ray cluster address; empty = start a local Ray; 'auto' = the running cluster")
    max_retries: int = _spec(2, "times a client is retried on another (or the restarted) worker when its worker "
                             "dies during the round; after that it is dropped with the reason recorded", min=0, max=100)
    queue_depth: int = _spec(2, "client calls in flight per worker: 2 queues its next client behind the running "
                             "one, so it does not wait for the coordinator between clients (the round's last "
                             "clients still go to whichever worker is free); 1 = one at a time", min=1, max=8)
    kernels: str = _spec("native", "CPU kernels of the coordinator and workers: native (each library picks by the "
                         "CPU; the bits differ between CPU types) or portable (pinned to AVX2 code, meant to give "
                         "the same bits on x86-64 CPUs with AVX2; tested on two kernel paths of one machine; "
                         "1.2-1.3x slower; README Reproducibility)", choices=KERNELS)


@dataclass
class EvalConfig:
    source: str = _spec("holdout", "evaluation videos: holdout (eval.holdout videos of the training source, "
                        "kept from the clients); split (the dataset's own test split: REDS4 for reds, sep_testlist "
                        "for vimeo90k, val/ for kinetics; the clients get the training split); folder (the videos "
                        "under eval.root, e.g. train on REDS, test on Vid4)", choices=EVAL_SOURCES)
    root: str = _spec("", "folder of the evaluation videos (eval.source = folder): a REDS, Vid4 (GT/ with BIx4/, "
                      "BDx4/) or Vimeo-90K root gives its test split, any other folder every video under it")
    holdout: int = _spec(4, "videos held out from the clients for evaluation (eval.source = holdout)", min=0,
                         max=100000)
    clips: int = _spec(8, "evaluation clips (whole frames) drawn from the evaluation videos", min=1, max=100000)
    channels: str = _spec("y", "PSNR / SSIM on y (BT.601 luma, as the papers report), rgb, or y+rgb (psnr, "
                          "ssim on Y plus psnr_rgb, ssim_rgb)", choices=EVAL_CHANNELS)


@dataclass
class ExperimentConfig:
    seed: int = _spec(0, "training seed: the initial model, client sampling, local crops, batches and "
                      "augmentation, dropout and straggler draws (replicates vary it; data.seed keeps the data); "
                      "at most 2^63 - 1, less the replicates above the first", min=0, max=SEED_MAX)
    model: ModelConfig = _spec(None, "model", factory=ModelConfig)
    data: DataConfig = _spec(None, "data", factory=DataConfig)
    fl: FLConfig = _spec(None, "federated learning", factory=FLConfig)
    platform: PlatformConfig = _spec(None, "Ray runtime", factory=PlatformConfig)
    eval: EvalConfig = _spec(None, "evaluation", factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------- building


def _allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    parts = []
    if m.get("min") is not None:
        parts.append(f"{'>' if m.get('min_exclusive') else '>='} {m['min']}")
    if m.get("max") is not None:
        parts.append(f"<= {m['max']}")
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping",
            list: "a list of integers"}
    return kind.get(_field_type(f), "a value") + (" " + " and ".join(parts) if parts else "")


def _field_type(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, str) else f.type.__name__
    return {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list}.get(t, object)


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    t = _field_type(f)
    auto = key == "platform.gpus_per_worker"  # or "auto": packed to fit at the start (fedvsr.platform.gpus)
    if auto and value == "auto":
        return value
    bad = ConfigError(f"{key} = {value!r} is not allowed; expected {_allowed(f)}{' or auto' if auto else ''}")
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad
    elif t is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        value = float(value)
    elif t is str:
        if not isinstance(value, str):
            raise bad
        if "\x00" in value:
            raise ConfigError(f"{key} = {value!r} is not allowed: it holds a NUL character")
    elif t is bool:
        if not isinstance(value, bool):
            raise bad
    elif t is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise bad
    elif t is list:
        if value is None:
            value = []
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        items = []
        for v in value:
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad
            items.append(v)
        return items
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise bad
    if m.get("min") is not None:
        if value < m["min"] or (m.get("min_exclusive") and value == m["min"]):
            raise bad
    if m.get("max") is not None and value > m["max"]:
        raise bad
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    by_name = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in by_name:
            raise ConfigError(
                f"unknown key {key!r}; allowed keys{' in ' + repr(prefix[:-1]) if prefix else ''}: "
                + ", ".join(sorted(by_name))
            )
        f = by_name[name]
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING
                                    else None):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{key} = {value!r} is not allowed; expected a mapping of {key}.* keys")
            kwargs[name] = _build(f.default_factory, value, key + ".")
        else:
            kwargs[name] = _coerce(key, f, value)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``tree["fl"]["mu"] = value`` for ``dotted = "fl.mu"``, creating sections as needed (in place)."""
    _set_dotted(tree, dotted, value)


def config_field(dotted: str) -> dataclasses.Field | None:
    """The dataclass field of a dotted key (``"fl.mu"``), None for a free-form key under a mapping
    field (``"model.options.group_size"``); raises ConfigError for a key that does not exist."""
    cls, parts = ExperimentConfig, dotted.split(".")
    for i, part in enumerate(parts):
        by_name = {f.name: f for f in fields(cls)}
        if part not in by_name:
            where = ".".join(parts[:i])
            raise ConfigError(f"unknown key {dotted!r}; allowed keys{' in ' + repr(where) if where else ''}: "
                              + ", ".join(sorted(by_name)))
        f = by_name[part]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            if i == len(parts) - 1:
                raise ConfigError(f"{dotted!r} is a section, not a key; its keys: "
                                  + ", ".join(sorted(g.name for g in fields(sub))))
            cls = sub
            continue
        if i == len(parts) - 1:
            return f
        if _field_type(f) is dict:
            return None  # free-form mapping (model.options): checked when the model is built
        parent = ".".join(parts[: i + 1])
        raise ConfigError(f"unknown key {dotted!r}: {parent!r} is a key ({_allowed(f)}), not a section")
    return None


def check_value(dotted: str, value: Any) -> Any:
    """The value as the config would store it, or ConfigError naming key, value and what is allowed."""
    f = config_field(dotted)
    return value if f is None else _coerce(dotted, f, value)


def allowed_values(dotted: str) -> str:
    """What a key allows, in words (``"a number > 0.0"``); empty for a free-form key."""
    f = config_field(dotted)
    return "" if f is None else _allowed(f)


def parse_override(text: str) -> tuple[str, Any]:
    """``"fl.lr=1e-3"`` -> ``("fl.lr", 0.001)``; the value is parsed as YAML (so ``1e-3`` stays a string
    until the float field coerces it, and ``{a: 1}`` is a mapping)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse the value: {one_line(err)}") from None
    return key, value


def config_from_dict(values: dict[str, Any]) -> ExperimentConfig:
    cfg = _build(ExperimentConfig, values or {}, "")
    validate(cfg)
    return cfg


#: the largest config or spec file read (a config is a few KiB; this stops a mistaken data file or device early)
MAX_YAML_BYTES = 16 * 2**20


def one_line(text: str) -> str:
    """``text`` on one line (YAML's and the OS's messages span several): lines joined by ``"; "``."""
    return "; ".join(" ".join(line.split()) for line in str(text).splitlines() if line.strip())


def read_yaml_file(path: str | os.PathLike, what: str = "config file") -> Any:
    """The YAML document in ``path``, or a ConfigError naming the file: missing, a folder or a device, unreadable
    (permissions), larger than :data:`MAX_YAML_BYTES`, not UTF-8 text, or not YAML."""
    p = Path(path)
    name = repr(str(p))
    try:
        info = p.stat()
    except OSError as err:
        if not p.exists() and isinstance(err, FileNotFoundError):
            raise ConfigError(f"{what} {name} does not exist") from None
        raise ConfigError(f"{what} {name} cannot be read: {err.strerror}") from None
    if p.is_dir():
        raise ConfigError(f"{what} {name} is a folder, not a YAML file")
    if not p.is_file():
        raise ConfigError(f"{what} {name} is not a regular file (a device, a pipe or a socket)")
    if info.st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {name} holds {info.st_size:,} bytes, more than the {MAX_YAML_BYTES:,} a YAML "
                          f"{what} may have")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise ConfigError(f"{what} {name} cannot be read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {name} is not UTF-8 text (byte {err.start}: {err.reason}); expected a YAML "
                          f"file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {name} is not valid YAML: {one_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{what} {name} is not valid YAML: nested too deeply") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Build and validate the config from a YAML file (optional) and ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level, not a "
                              f"{type(loaded).__name__}")
        tree = loaded or {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


# --------------------------------------------------------------------------------------- validation


def validate(cfg: ExperimentConfig) -> None:
    """Checks that involve several keys, or the model registry."""
    from fedvsr.models.registry import get_entry, preset_kwargs

    fl, data = cfg.fl, cfg.data
    if fl.clients_per_round > fl.clients:
        raise ConfigError(
            f"fl.clients_per_round = {fl.clients_per_round} is larger than fl.clients = {fl.clients}; "
            f"allowed: 1 <= fl.clients_per_round <= fl.clients"
        )
    if fl.min_clients > fl.clients_per_round:
        raise ConfigError(f"fl.min_clients = {fl.min_clients} is larger than fl.clients_per_round = "
                          f"{fl.clients_per_round}: every round would fail; allowed: 0 <= fl.min_clients <= "
                          f"fl.clients_per_round")
    try:
        entry = get_entry(cfg.model.name)
    except KeyError as err:
        raise ConfigError(f"model.name = {cfg.model.name!r}: {err.args[0]}") from None
    if cfg.model.preset not in entry.presets:
        raise ConfigError(
            f"model.preset = {cfg.model.preset!r} is not a preset of {cfg.model.name!r}; "
            f"allowed: {', '.join(entry.presets)}"
        )
    _check_model_builds(cfg)
    num_frames = preset_kwargs(cfg.model.name, cfg.model.preset, cfg.model.options).get(
        "num_frames", entry.cls.num_frames
    )
    if data.clip_frames and entry.cls.center_output and data.clip_frames != num_frames:
        raise ConfigError(
            f"data.clip_frames = {data.clip_frames} does not match the {num_frames} input frames of "
            f"{cfg.model.name}/{cfg.model.preset}, which restores the centre frame; allowed: 0 or {num_frames}"
        )
    _check_hifr_mode(cfg, entry.cls.center_output)
    _check_schedule(fl)
    if fl.stragglers > 0 and fl.deadline == 0:
        raise ConfigError(f"fl.stragglers = {fl.stragglers} has no effect without a deadline: client speeds only "
                          f"scale fl.deadline; set fl.deadline > 0 or fl.stragglers = 0")
    ev = cfg.eval
    if ev.source == "holdout" and ev.holdout < 1:
        raise ConfigError("eval.holdout = 0 leaves no evaluation video with eval.source = 'holdout'; allowed: "
                          "eval.holdout >= 1, or eval.source = 'folder' with eval.root")
    if ev.source == "folder" and not ev.root:
        raise ConfigError("eval.root = '' must name the folder of evaluation videos when eval.source = 'folder'")
    if ev.source == "split" and data.source not in SPLIT_SOURCES:
        why = ("Vid4 is a test set with no training split; use it as eval.root with eval.source = 'folder'"
               if data.source == "vid4" else "it has no standard test split")
        raise ConfigError(f"eval.source = 'split' is not allowed with data.source = {data.source!r}: {why}; allowed: "
                          f"data.source one of {', '.join(map(repr, SPLIT_SOURCES))}, or eval.source 'holdout' / "
                          f"'folder'")
    if data.augment == "flip-rot" and not getattr(entry.cls, "rotation_safe", True):
        raise ConfigError(f"data.augment = 'flip-rot': {cfg.model.name} is not rotation-safe; allowed: auto, "
                          f"flip, none")
    held = ev.holdout if ev.source == "holdout" else 0
    clip = data.clip_frames or num_frames
    if data.segment_frames and data.segment_frames < clip:
        raise ConfigError(
            f"data.segment_frames = {data.segment_frames} is shorter than a training clip ({clip} frames: "
            f"data.clip_frames, or the {num_frames} input frames of {cfg.model.name}/{cfg.model.preset}); "
            f"allowed: 0 (whole videos) or data.segment_frames >= {clip}"
        )
    if data.source == "synthetic" and data.segment_frames:
        if data.segment_frames > data.frames:
            raise ConfigError(
                f"data.segment_frames = {data.segment_frames} is longer than the videos (data.frames = "
                f"{data.frames}); allowed: 0 (whole videos) or {clip} <= data.segment_frames <= {data.frames}"
            )
        segments = (data.videos - held) * (data.frames // data.segment_frames)
        if segments < fl.clients:
            raise ConfigError(
                f"data.segment_frames = {data.segment_frames} cuts the {data.videos - held} client videos "
                f"(data.videos = {data.videos} less eval.holdout = {held}) of {data.frames} frames into "
                f"{segments} segments, fewer than fl.clients = {fl.clients}; allowed: fl.clients <= {segments}"
            )
    if data.source == "synthetic":
        client_videos = data.videos - held
        if client_videos < fl.clients and not data.segment_frames:
            raise ConfigError(
                f"data.videos = {data.videos} leaves {client_videos} videos after eval.holdout = "
                f"{held}, fewer than fl.clients = {fl.clients}; allowed: "
                f"data.videos >= fl.clients + eval.holdout"
            )
        for key, size in (("data.height", data.height), ("data.width", data.width)):
            if size % data.scale or size // data.scale < data.patch:
                raise ConfigError(
                    f"{key} = {size} must be a multiple of data.scale = {data.scale} and give LR frames "
                    f"at least data.patch = {data.patch} pixels wide; allowed: {key} >= "
                    f"{data.patch * data.scale}"
                )
    elif not data.root:
        raise ConfigError(f"data.root = '' must name the dataset folder when data.source = {data.source!r}")
    if data.clip_frames and data.source == "synthetic" and data.clip_frames > data.frames:
        raise ConfigError(
            f"data.clip_frames = {data.clip_frames} is longer than the videos (data.frames = {data.frames})"
        )
    _check_degradation(data)
    if fl.partition == "by-degradation" and data.degradation != "bicubic":
        raise ConfigError(f"data.degradation = {data.degradation!r} is not used with fl.partition = 'by-degradation', "
                          f"which gives every client its own device's degradation (and the evaluation videos each "
                          f"kind in turn); allowed: data.degradation = 'bicubic' (the default), or another "
                          f"fl.partition")


def _check_degradation(data: DataConfig) -> None:
    """The degradation keys against one another: the fca2-mix CRF range, the VSRGAN operations, the LR cache."""
    if data.mix_crf_min > data.mix_crf_max:
        raise ConfigError(f"data.mix_crf_min = {data.mix_crf_min} is larger than data.mix_crf_max = "
                          f"{data.mix_crf_max}; allowed: data.mix_crf_min <= data.mix_crf_max")
    from fedvsr.data.degrade import VSRGAN_OPS, parse_ops

    try:
        ops = parse_ops(data.vsrgan_ops)
    except ValueError as err:
        raise ConfigError(f"data.vsrgan_ops = {data.vsrgan_ops!r}: {err}") from None
    if not ops and data.degradation == "vsrgan":
        raise ConfigError(f"data.vsrgan_ops = {data.vsrgan_ops!r} names no operation; allowed: a comma-separated "
                          f"subset of {', '.join(VSRGAN_OPS)}")
    if data.lr_cache not in ("", "none", "off") and Path(data.lr_cache).expanduser().is_file():
        raise ConfigError(f"data.lr_cache = {data.lr_cache!r} is a file; allowed: '' (the default folder), 'none', "
                          f"or a folder")


def _check_hifr_mode(cfg: ExperimentConfig, center_output: bool) -> None:
    """3D L_HiFr needs a clip (b, t, c, H, W) out of the model; a centre-output model returns one frame."""
    if cfg.fl.hifr_mode == "3d" and center_output and cfg.fl.strategy in ("fedvsr", "fedavg-dwt"):
        from fedvsr.models.registry import get_entry, model_names

        clips = ", ".join(n for n in model_names() if not get_entry(n).cls.center_output)
        raise ConfigError(
            f"fl.hifr_mode = '3d' needs a restored clip, but {cfg.model.name} restores only the centre frame "
            f"(fl.strategy = {cfg.fl.strategy!r} uses L_HiFr); allowed: fl.hifr_mode = '2d' with "
            f"{cfg.model.name}, or '3d' with a model that restores every frame ({clips})"
        )


def _check_schedule(fl: FLConfig) -> None:
    """The learning-rate schedule's keys against one another and against the round clock's horizon."""
    ms = fl.lr_milestones
    if fl.lr_schedule == "multistep":
        if not ms:
            raise ConfigError("fl.lr_schedule = 'multistep' needs fl.lr_milestones, e.g. [5, 10] (clock positions "
                              "where the rate is multiplied by fl.lr_gamma)")
        if any(m < 1 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
            raise ConfigError(f"fl.lr_milestones = {ms} is not allowed; expected increasing integers >= 1")
        if fl.lr_clock == "round" and ms[-1] >= fl.rounds:
            raise ConfigError(f"fl.lr_milestones = {ms}: {ms[-1]} is never reached with fl.lr_clock = 'round' "
                              f"and fl.rounds = {fl.rounds} (positions 0 .. {fl.rounds - 1}); allowed: milestones "
                              f"< fl.rounds")
    elif ms:
        raise ConfigError(f"fl.lr_milestones = {ms} is only used by fl.lr_schedule = 'multistep' (it is "
                          f"{fl.lr_schedule!r}); remove it or change the schedule")
    if fl.lr_schedule == "cosine" and fl.lr_min >= fl.lr:
        raise ConfigError(f"fl.lr_min = {fl.lr_min} must be below fl.lr = {fl.lr} for the cosine schedule")
    if fl.lr_clock == "round" and fl.lr_warmup >= fl.rounds:
        raise ConfigError(f"fl.lr_warmup = {fl.lr_warmup} rounds is not shorter than fl.rounds = {fl.rounds}; "
                          f"allowed: 0 <= fl.lr_warmup < fl.rounds (or fl.lr_clock = 'local')")


def _check_model_builds(cfg: ExperimentConfig) -> None:
    """Construct the model once on the meta device (no memory, no compute), so that a bad
    ``model.options`` value is a config error here rather than a crash inside a Ray worker."""
    import torch

    from fedvsr.models.registry import build_model

    _check_option_sizes(cfg.model.options, "model.options")
    try:
        with torch.device("meta"):
            model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
            check = getattr(model, "check_experiment", None)  # a family's own cross-key checks (FCA2's modes)
            if callable(check):
                check(cfg)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise ConfigError(
            f"model.options = {cfg.model.options!r} cannot build {cfg.model.name}/{cfg.model.preset}: "
            f"{err.args[0] if isinstance(err, KeyError) else err}"
        ) from None
    scale = getattr(model, "scale", cfg.data.scale)
    if int(scale) != cfg.data.scale:
        raise ConfigError(
            f"data.scale = {cfg.data.scale} does not match {cfg.model.name}/{cfg.model.preset}, which upscales "
            f"x{scale}; allowed: data.scale = {scale}, or model.options.scale = {cfg.data.scale}"
        )


#: the largest integer in model.options: every shipped family's sizes (channels, blocks, frames) are at most 128
#: and its counts (spynet_frozen_iters) 5000; a larger one is a typo that would take minutes to build even on the
#: meta device (2 ms per residual block here)
MAX_MODEL_OPTION = 65536


def _check_option_sizes(value: Any, key: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_option_sizes(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_option_sizes(v, key)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_MODEL_OPTION:
        raise ConfigError(f"{key} = {value} is not allowed; integers in model.options are at most {MAX_MODEL_OPTION} "
                          f"in size (model sizes and counts)")


def config_table() -> str:
    """Every key as a Markdown table (key, default, allowed, what it is): the README's configuration table."""
    lines = ["| key | default | allowed | what it is |", "|---|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        for f in fields(cls):
            sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(sub):
                walk(sub, f"{prefix}{f.name}.")
                continue
            default = sub() if sub is not None else f.default
            lines.append(f"| `{prefix}{f.name}` | `{default!r}` | {_allowed(f)} | {f.metadata['help']} |")

    walk(ExperimentConfig, "")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- applicability

_FEDVSR_FAMILY = ("fedvsr", "fedavg-dwt", "fedvsr-gla", "fedvsr-ala")
#: key (or ``prefix*``) -> (the key it depends on, the values under which it is used). Read from the code that
#: uses each key: fedvsr.fl.build_strategy (FedVSR's ablations are FedVSR with parts switched off: gla and
#: ala drop L_HiFr, gla forces alpha_decay = none, fedavg-dwt keeps sample weights, so no alpha; lambda_vsr
#: still scales the loss of gla and ala, and mixing still blends the weights of fedavg-dwt), degrade.params,
#: fl.schedule, fl.partition, the coordinator's deadline and straggler draws, and the data and eval sources.
KEY_CONDITIONS: dict[str, tuple[str, tuple]] = {
    "fl.mu": ("fl.strategy", ("fedprox",)),
    "fl.server_lr": ("fl.strategy", ("scaffold",)),
    "fl.lambda_vsr": ("fl.strategy", _FEDVSR_FAMILY),
    "fl.lambda_hifr": ("fl.strategy", ("fedvsr", "fedavg-dwt")),
    "fl.hifr_mode": ("fl.strategy", ("fedvsr", "fedavg-dwt")),
    "fl.hifr_eps": ("fl.strategy", ("fedvsr", "fedavg-dwt")),
    "fl.alpha": ("fl.strategy", ("fedvsr", "fedvsr-gla", "fedvsr-ala")),
    "fl.mixing": ("fl.strategy", _FEDVSR_FAMILY),
    "fl.alpha_decay": ("fl.strategy", ("fedvsr", "fedvsr-ala")),
    "data.crf": ("data.degradation", ("h264", "blur-h264")),
    "data.qp": ("data.degradation", ("hevc",)),
    "data.sigma": ("data.degradation", ("blur", "h264", "blur-h264", "fca2-mix")),
    "data.mix_*": ("data.degradation", ("fca2-mix",)),
    "data.vsrgan_*": ("data.degradation", ("vsrgan",)),
    "fl.lr_min": ("fl.lr_schedule", ("cosine",)),
    "fl.lr_milestones": ("fl.lr_schedule", ("multistep",)),
    "fl.lr_gamma": ("fl.lr_schedule", ("multistep",)),
    "fl.dirichlet_beta": ("fl.partition", ("quantity-skew", "dirichlet")),
    "data.videos": ("data.source", ("synthetic",)),
    "data.frames": ("data.source", ("synthetic",)),
    "data.height": ("data.source", ("synthetic",)),
    "data.width": ("data.source", ("synthetic",)),
    "data.content": ("data.source", ("synthetic",)),
    "eval.holdout": ("eval.source", ("holdout",)),
    "eval.root": ("eval.source", ("folder",)),
}
#: used only with a deadline (fl.deadline > 0): the unit, the action, and the speeds that scale it
DEADLINE_KEYS = ("fl.deadline_unit", "fl.deadline_action", "fl.stragglers")


def key_applies(flat_config: dict[str, Any], key: str) -> bool:
    """Whether the dotted ``key`` can change the numbers of the run whose flattened config (``{"fl.mu": ...}``)
    is ``flat_config``: ``fl.mu`` only under FedProx, ``data.crf`` only under an H.264 degradation, ... (see
    :data:`KEY_CONDITIONS`). A key with no condition, or whose condition key is missing, applies. Result tables
    leave a key that does not apply empty, so ``--where fl.mu=0.001`` does not match FedVSR runs."""
    if key in DEADLINE_KEYS:
        deadline = flat_config.get("fl.deadline")
        return deadline is None or deadline > 0
    if key == "fl.lr_clock":  # the clock of a schedule or a warm-up; nothing to count under a plain constant rate
        schedule, warmup = flat_config.get("fl.lr_schedule"), flat_config.get("fl.lr_warmup")
        return schedule is None or schedule != "constant" or bool(warmup)
    condition = KEY_CONDITIONS.get(key)
    if condition is None:
        section, _, name = key.rpartition(".")
        starred = f"{section}.{name.split('_', 1)[0]}_*" if "_" in name else None
        condition = KEY_CONDITIONS.get(starred) if starred else None
    if condition is None:
        return True
    on, values = condition
    return on not in flat_config or flat_config[on] in values
