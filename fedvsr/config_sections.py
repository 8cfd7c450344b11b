"""The sections of the experiment configuration: one dataclass per section (``model``, ``data``, ``fl``,
``platform``, ``eval``) and :class:`ExperimentConfig` holding them, each key declared once with its default, its
help and what it allows (:func:`fedvsr.fields.key`), and the choices those keys take.

:mod:`fedvsr.config` re-exports every name here (``from fedvsr.config import FLConfig`` is where callers look) and
builds, validates and loads these from YAML files and ``key=value`` overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

import yaml

from fedvsr.fields import ConfigError, default_of
from fedvsr.fields import key as _spec
from fedvsr.fl.registry import all_key_fields, get_strategy, strategy_names

DATA_SOURCES = ("synthetic", "folder", "reds", "vid4", "vimeo90k", "kinetics")
DEGRADATIONS = ("bicubic", "blur", "h264", "blur-h264", "hevc", "fca2-mix", "vsrgan")
PARTITIONS = ("random", "by-class", "quantity-skew", "dirichlet", "by-degradation")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "multistep")
LR_CLOCKS = ("round", "local")
AUGMENTS = ("auto", "none", "flip", "flip-rot")
EVAL_SOURCES = ("holdout", "split", "folder")
SYNTHETIC_CONTENT = ("natural", "procedural", "all")  # fedvsr.data.synthetic.CONTENT
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
    options: dict = _spec(
        None,
        "constructor arguments overriding the preset's (network sizes; a user model's "
        "arguments); a family's training-recipe keys are model.recipe.*",
        factory=dict,
    )
    #: the family's training-recipe dataclass (fedvsr.models.registry.ModelEntry.recipe; VSRGAN's loss weights):
    #: its keys are model.recipe.*; None for a family without one. The constructor gets its values that differ
    #: from their defaults through ``options`` (what the runtime passes to build_model)
    recipe: Any = None

    def __post_init__(self) -> None:
        entry = _model_entry(self.name)
        if self.recipe is None and entry is not None and entry.recipe is not None:
            self.recipe = entry.recipe()

    def to_dict(self) -> dict[str, Any]:
        """The section as a config file holds it: the recipe's keys under ``recipe`` (a family with one), not in
        ``options``."""
        out = {"name": self.name, "preset": self.preset, "options": dataclasses.asdict(self)["options"]}
        if self.recipe is not None:
            out["options"] = {k: v for k, v in out["options"].items() if not hasattr(self.recipe, k)}
            out["recipe"] = dataclasses.asdict(self.recipe)
        return out


def _model_entry(name: str) -> Any:
    """The model registry's entry, or None for a name it cannot resolve (validate() says why)."""
    from fedvsr.models.registry import get_entry

    try:
        return get_entry(name)
    except KeyError:
        return None


@dataclass
class DataConfig:
    seed: int = _spec(
        0,
        "data seed: the built-in videos, which videos are held out for evaluation, the "
        "partition among clients and the random degradation draws; fixed while replicates vary "
        "the training seed (seed); at most 2^63 - 1 (a signed 64-bit integer, as Parquet stores "
        "it)",
        min=0,
        max=SEED_MAX,
    )
    source: str = _spec(
        "synthetic",
        "where videos come from: synthetic (built-in); folder (video files and frame "
        "folders under data.root, label = the folder under the root); reds (train_sharp/<clip>/, "
        "train split = all but REDS4); vid4 (GT/<clip>/, a test set); vimeo90k (vimeo_septuplet/"
        "sequences with sep_trainlist.txt); kinetics (<class>/<video>.mp4, or train/ and val/ "
        "above the classes; label = the class). Pre-made LR frames (REDS train_sharp_bicubic/X4, "
        "BIx4 / BDx4, vimeo_septuplet_matlabLRx4) replace the resampling of the HR frames when "
        "present",
        choices=DATA_SOURCES,
    )
    root: str = _spec(
        "",
        "dataset folder (folder and dataset sources); synthetic: the folder holding the built "
        "videos, one synthetic-<key> folder per data.seed and size (default: $FEDVSR_CACHE or "
        "~/.cache/fedvsr)",
    )
    degradation: str = _spec(
        "bicubic",
        "how LR videos are made from HR videos: bicubic (antialiased, MATLAB-"
        "like); blur (Gaussian blur of data.sigma + every scale-th pixel); h264 (blur + H.264 "
        "at data.crf: FCA2; blur-h264 is the same); hevc (bicubic + HEVC at data.qp, no "
        "B-frames: FCVSR's low-delay); fca2-mix (FCA2's training mix: blur, then H.264 at a "
        "random CRF for a data.mix_compressed fraction of the videos); vsrgan (bicubic + "
        "the VSRGAN degradation suite, data.vsrgan_*). Random draws depend on (data.seed, video)",
        choices=DEGRADATIONS,
    )
    crf: int = _spec(25, "h264: H.264 constant rate factor (FCA2 paper: 15, 25, 35)", min=0, max=51)
    qp: int = _spec(32, "hevc: HEVC quantisation parameter (FCVSR paper: 22, 27, 32, 37)", min=0, max=51)
    sigma: float = _spec(
        1.5,
        "blur, h264, fca2-mix: std of the Gaussian blur before subsampling, in HR pixels "
        "(FCA2 paper: 1.5; BasicSR's BD and Vid4 BDx4: 1.6)",
        min=0.1,
        max=10.0,
    )
    mix_crf_min: int = _spec(
        15,
        "fca2-mix: lowest CRF of the compressed videos (CRF drawn uniformly from the "
        "integers data.mix_crf_min .. data.mix_crf_max; FCA2 tests 15 / 25 / 35)",
        min=0,
        max=51,
    )
    mix_crf_max: int = _spec(35, "fca2-mix: highest CRF of the compressed videos", min=0, max=51)
    mix_compressed: float = _spec(
        0.5,
        "fca2-mix: probability that a video is compressed (FCA2: 50% uncompressed, 50% compressed)",
        min=0.0,
        max=1.0,
    )
    vsrgan_ops: str = _spec(
        "blur,noise,contrast,frequency,cutblur,diffusion,content,adaptive,jpeg",
        "vsrgan: comma-separated operations of the suite (VSRGAN paper 3.1.2), applied in "
        "this order: blur, noise, contrast (and brightness), frequency (Haar-guided), cutblur, "
        "diffusion, content (-aware), adaptive, jpeg",
    )
    vsrgan_prob: float = _spec(
        0.5, "vsrgan: probability each operation is applied to a video (the paper gives none; ours)", min=0.0, max=1.0
    )
    vsrgan_sigma: float = _spec(
        1.5,
        "vsrgan: largest Gaussian blur sigma in LR pixels (blur: U(0.2, this); "
        "content-aware: U(0.5, 2 x this); adaptive: U(0.3, this / 2) per iteration; "
        "the paper gives no number; ours)",
        min=0.2,
        max=5.0,
    )
    vsrgan_noise: float = _spec(
        10.0, "vsrgan: largest Gaussian noise std in 8-bit levels (std ~ U(0, this); ours)", min=0.0, max=50.0
    )
    vsrgan_brightness: float = _spec(
        0.1,
        "vsrgan: largest brightness shift, a fraction of the range (shift ~ U(-this, this); ours)",
        min=0.0,
        max=0.5,
    )
    vsrgan_contrast: float = _spec(0.2, "vsrgan: contrast factor ~ U(1 - this, 1 + this) (ours)", min=0.0, max=0.9)
    vsrgan_freq_gain: float = _spec(
        0.5, "vsrgan: the Haar detail sub-bands are multiplied by U(1 - this, 1 + this) (ours)", min=0.0, max=1.0
    )
    vsrgan_cutblur: float = _spec(
        0.5,
        "vsrgan: largest CutBlur rectangle side, a fraction of the frame side "
        "(sides ~ U(0.25, this); the region is average-pooled by 2-4 and bilinearly "
        "upsampled; ours)",
        min=0.1,
        max=1.0,
    )
    vsrgan_diffusion_steps: int = _spec(
        4,
        "vsrgan: most blur iterations of diffusion (sigma U(0.3, 0.7) each) and adaptive (1 .. this; ours)",
        min=1,
        max=20,
    )
    vsrgan_jpeg_quality: int = _spec(
        30, "vsrgan: lowest JPEG quality (quality ~ integers in [this, 95]; ours)", min=1, max=95
    )
    lr_cache: str = _spec(
        "",
        "folder of the on-disk cache of degraded LR videos, shared by a node's workers "
        "(each video is degraded once per node); '' = $FEDVSR_CACHE/lr (~/.cache/fedvsr/lr), "
        "'none' = no cache",
    )
    hr_cache_mb: float = _spec(
        64.0,
        "decoded HR videos of at most this many MiB (frames x H x W x 3 bytes) are kept "
        "as arrays in the same cache folder, so a node decodes each once (a larger one is "
        "decoded on every load: REDS' 100 frames of 720p are 264 MiB); 0 = never",
        min=0.0,
        max=1048576.0,
    )
    scale: int = _spec(
        4,
        "super-resolution factor (1: LR = HR, for pretraining an autoencoder GT -> GT, FCA2's mode = pretrain)",
        choices=(1, 2, 3, 4),
    )
    clip_frames: int = _spec(
        0,
        "frames per training clip; 0 = the model's number of input frames (the papers train on 5 to 30)",
        min=0,
        max=1000,
    )
    patch: int = _spec(
        16,
        "LR training crop size in pixels (HR crop = patch * scale; the papers crop 64 LR pixels); "
        "the default experiment's recipe: 16 (a quarter of the built-in 32x32 LR frames, so four "
        "times the crops for the same compute as whole frames)",
        min=4,
        max=1024,
    )
    samples_per_video: int = _spec(
        64,
        "random clips drawn from each video per local epoch (default experiment: 3 "
        "videos x 64 = 192 clips, 48 local steps a client a round at fl.batch_size 4)",
        min=1,
        max=100000,
    )
    augment: str = _spec(
        "auto",
        "training-clip augmentation: flip (horizontal, vertical, temporal reversal), "
        "flip-rot (flip plus 90-degree rotations: all 8 orientations), none; auto = flip-rot for "
        "a rotation-safe model (every shipped family), else flip",
        choices=AUGMENTS,
    )
    dark_threshold: float = _spec(
        0.0,
        "VSRGAN's dark-patch elimination: a training crop whose HR mean RGB (0..1, "
        "all its frames) is below this is redrawn (seeded; the brightest of 11 draws "
        "when all are dark); the paper gives no value; 0 = keep every crop",
        min=0.0,
        max=1.0,
    )
    videos: int = _spec(
        28,
        "synthetic: number of videos generated (clients + held-out); a local run also checks "
        "that they fit the machine's memory and disk before Ray starts",
        min=2,
        max=1000000,
    )
    frames: int = _spec(16, "synthetic: frames per video", min=1, max=10000)
    height: int = _spec(128, "synthetic: HR frame height (at most 8192, DCI 8K)", min=16, max=8192)
    width: int = _spec(128, "synthetic: HR frame width (at most 8192, DCI 8K)", min=16, max=8192)
    content: str = _spec(
        "natural",
        "synthetic: the content classes, video k of class k mod their number: natural "
        "(scikit-image's photographs under a pan, a zoom, a roll, and textures under a hand-held "
        "moving crop); procedural (gratings, checkerboards, 1/f noise with objects, waves); all "
        "(the eight)",
        choices=SYNTHETIC_CONTENT,
    )
    segment_frames: int = _spec(
        0,
        "cut every client video into segments of this many frames and partition the "
        "segments (a shorter last segment is dropped); evaluation videos stay whole; "
        "0 = whole videos",
        min=0,
        max=10000,
    )


@dataclass
class FLConfig:
    strategy: str = _spec(
        "fedavg",
        "federated strategy (fedvsr.fl.registry: the ablations fedavg-dwt, fedvsr-gla "
        "and fedvsr-ala are FedVSR with parts switched off); a strategy's own keys follow "
        "fl.dirichlet_beta, and one it does not read may not be set",
        choices=strategy_names,
    )
    clients: int = _spec(8, "number of simulated clients", min=1, max=100000)
    clients_per_round: int = _spec(4, "clients sampled each round", min=1, max=100000)
    min_clients: int = _spec(
        1,
        "a round in which fewer sampled clients train (the others dropped: unreadable data, "
        "dropout, deadline, lost workers) fails: recorded, no model update, and the run stops "
        "with an error, keeping the last good round's checkpoint; 0 = never (such a round "
        "keeps the global model and the run goes on)",
        min=0,
        max=100000,
    )
    rounds: int = _spec(20, "communication rounds (the FedVSR paper runs 100; at most 100000)", min=1, max=100000)
    local_epochs: int = _spec(1, "local epochs per round", min=1, max=1000)
    batch_size: int = _spec(
        4,
        "local mini-batch size in clips (FCVSR: 8; small batches, many steps: the default "
        "experiment gains more from local steps than from larger batches; at most 4096)",
        min=1,
        max=4096,
    )
    lr: float = _spec(
        2e-3,
        "client learning rate (the papers' Adam rates are 1e-4 to 2e-4; at most 10, which no optimizer here survives)",
        min=0.0,
        min_exclusive=True,
        max=10.0,
    )
    optimizer: str = _spec("adam", "client optimizer (fresh each round)", choices=OPTIMIZERS)
    lr_schedule: str = _spec(
        "cosine",
        "learning-rate schedule: constant; cosine (annealing to fl.lr_min over "
        "the clock's horizon: FCA2, VRT/RVRT; the default, over the rounds, so the run settles "
        "by its last rounds); multistep (times fl.lr_gamma at each of "
        "fl.lr_milestones: FCVSR halves at 2K, 8K, 12K of 30K)",
        choices=LR_SCHEDULES,
    )
    lr_clock: str = _spec(
        "round",
        "what the schedule counts: round (global round t-1 of fl.rounds; one rate "
        "for a whole round) or local (the client's local step within the round, of all its "
        "steps that round; restarts each round, as the optimizer does)",
        choices=LR_CLOCKS,
    )
    lr_warmup: int = _spec(0, "linear warm-up over the first N clock units (rate * (i+1)/N)", min=0, max=1000000)
    lr_min: float = _spec(0.0, "cosine: the rate reached at the end of the horizon", min=0.0, max=10.0)
    lr_milestones: list = _spec(
        None,
        "multistep: clock positions (0-based, increasing) where the rate is multiplied by fl.lr_gamma",
        factory=list,
    )
    lr_gamma: float = _spec(0.5, "multistep: factor at each milestone", min=0.0, min_exclusive=True, max=10.0)
    clip_grad_norm: float = _spec(
        0.0,
        "clip each optimizer's gradients to this total L2 norm before its step (after SCAFFOLD's correction); 0 = off",
        min=0.0,
        max=1e6,
    )
    partition: str = _spec(
        "random",
        "how videos are split among clients: random ('less heterogeneous'), "
        "by-class (one class per client, 'more heterogeneous'), quantity-skew, dirichlet, "
        "by-degradation (random's split, and each client's LR videos from its own device: "
        "bicubic, blur of sigma 1.0-2.0, H.264 at CRF 18-35, HEVC at QP 22-37 in turn over the "
        "clients, drawn from data.seed; evaluation video k gets kind k mod 4 at the middle of "
        "its range; data.degradation stays bicubic)",
        choices=PARTITIONS,
    )
    dirichlet_beta: float = _spec(
        0.5,
        "concentration of the quantity-skew / dirichlet partitions (large = even)",
        min=0.0,
        min_exclusive=True,
        max=1e6,
    )
    #: the strategy's parameter dataclass (fedvsr.fl.registry): its keys are this section's fl.mu, fl.lambda_hifr,
    #: ... (in a config file, flat beside the others); None = the strategy's defaults
    params: Any = None
    dropout: float = _spec(
        0.0,
        "probability that a sampled client fails to report (drawn per seed, round and "
        "client; recorded as dropped, never trained)",
        min=0.0,
        max=1.0,
    )
    deadline: float = _spec(
        0.0,
        "per-client deadline in fl.deadline_unit, scaled by the client's speed (see "
        "fl.stragglers); a client that cannot finish is cut or dropped (fl.deadline_action); "
        "0 = none",
        min=0.0,
        max=1e9,
    )
    deadline_unit: str = _spec(
        "steps",
        "steps (local steps of a speed-1 client: seeded, reproducible) or seconds "
        "(wall clock of the worker: depends on the hardware)",
        choices=DEADLINE_UNITS,
    )
    deadline_action: str = _spec(
        "cut",
        "cut (aggregate the steps done by the deadline: FedProx's partial work) or "
        "drop (leave the late client out: FedAvg's rule)",
        choices=DEADLINE_ACTIONS,
    )
    stragglers: float = _spec(
        0.0,
        "spread of client speeds: client i runs at speed exp(sigma z_i), z_i ~ N(0, 1) "
        "drawn once per client from the seed; its deadline budget is fl.deadline x speed; "
        "0 = every client at speed 1; at most 10 (speeds e^-40 .. e^40)",
        min=0.0,
        max=10.0,
    )

    def __post_init__(self) -> None:
        try:
            entry = get_strategy(self.strategy)
        except KeyError as err:
            raise ConfigError(f"fl.strategy = {self.strategy!r}: {err.args[0]}") from None
        if self.params is None:
            self.params = entry.make_params()
        elif not isinstance(self.params, entry.params):
            raise ConfigError(
                f"fl.params is a {type(self.params).__name__}, but fl.strategy = {self.strategy!r} "
                f"takes {entry.params.__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The section as a config file holds it: the strategy's keys flat in the place of ``params``, every
        strategy's keys present (a key the chosen strategy does not read at its default), as earlier runs wrote."""
        raw, reads = dataclasses.asdict(self), get_strategy(self.strategy).keys()
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "params":
                out[f.name] = raw[f.name]
                continue
            for name, kf in all_key_fields().items():
                out[name] = raw["params"][name] if name in reads else default_of(kf)
        return out


@dataclass
class PlatformConfig:
    workers: int = _spec(
        2,
        "long-lived worker actors training clients; on a local Ray, workers x "
        "cpus_per_worker may not exceed the machine's CPUs (see platform.oversubscribe)",
        min=1,
        max=10000,
    )
    cpus_per_worker: float = _spec(
        1.0, "CPUs reserved per worker (also its torch threads)", min=0.0, min_exclusive=True, max=1024.0
    )
    oversubscribe: bool = _spec(
        False,
        "local Ray only: allow platform.workers x platform.cpus_per_worker above the "
        "machine's CPUs (Ray is then told it has that many; the workers share the cores and "
        "each runs slower; said on the console)",
    )
    gpus_per_worker: float = _spec(0.0, "GPUs per worker; fractions share a GPU", min=0.0, max=8.0)
    address: str = _spec("", "Ray cluster address; empty = start a local Ray; 'auto' = the running cluster")
    max_retries: int = _spec(
        2,
        "times a client is retried on another (or the restarted) worker when its worker "
        "dies during the round; after that it is dropped with the reason recorded",
        min=0,
        max=100,
    )
    queue_depth: int = _spec(
        2,
        "client calls in flight per worker: 2 queues its next client behind the running "
        "one, so it does not wait for the coordinator between clients (the round's last "
        "clients still go to whichever worker is free); 1 = one at a time",
        min=1,
        max=8,
    )
    kernels: str = _spec(
        "native",
        "CPU kernels of the coordinator and workers: native (each library picks by the "
        "CPU; the bits differ between CPU types) or portable (pinned to AVX2 code, meant to give "
        "the same bits on x86-64 CPUs with AVX2; tested on two kernel paths of one machine; "
        "1.2-1.3x slower; docs/reproducibility.md)",
        choices=KERNELS,
    )


@dataclass
class EvalConfig:
    source: str = _spec(
        "holdout",
        "evaluation videos: holdout (eval.holdout videos of the training source, "
        "kept from the clients); split (the dataset's own test split: REDS4 for reds, sep_testlist "
        "for vimeo90k, val/ for kinetics; the clients get the training split); folder (the videos "
        "under eval.root, e.g. train on REDS, test on Vid4)",
        choices=EVAL_SOURCES,
    )
    root: str = _spec(
        "",
        "folder of the evaluation videos (eval.source = folder): a REDS, Vid4 (GT/ with BIx4/, "
        "BDx4/) or Vimeo-90K root gives its test split, any other folder every video under it",
    )
    holdout: int = _spec(
        4, "videos held out from the clients for evaluation (eval.source = holdout)", min=0, max=100000
    )
    clips: int = _spec(8, "evaluation clips (whole frames) drawn from the evaluation videos", min=1, max=100000)
    channels: str = _spec(
        "y",
        "PSNR / SSIM on y (BT.601 luma, as the papers report), rgb, or y+rgb (psnr, ssim on Y plus psnr_rgb, ssim_rgb)",
        choices=EVAL_CHANNELS,
    )


@dataclass
class ExperimentConfig:
    seed: int = _spec(
        0,
        "training seed: the initial model, client sampling, local crops, batches and "
        "augmentation, dropout and straggler draws (replicates vary it; data.seed keeps the data); "
        "at most 2^63 - 1, less the replicates above the first",
        min=0,
        max=SEED_MAX,
    )
    model: ModelConfig = _spec(None, "model", factory=ModelConfig)
    data: DataConfig = _spec(None, "data", factory=DataConfig)
    fl: FLConfig = _spec(None, "federated learning", factory=FLConfig)
    platform: PlatformConfig = _spec(None, "Ray runtime", factory=PlatformConfig)
    eval: EvalConfig = _spec(None, "evaluation", factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"], out["fl"] = self.model.to_dict(), self.fl.to_dict()
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
