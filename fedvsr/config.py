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
DEGRADATIONS = ("bicubic", "blur-h264", "hevc")
STRATEGIES = ("fedavg", "fedprox", "scaffold", "fedvsr", "fedavg-dwt", "fedvsr-gla", "fedvsr-ala")
PARTITIONS = ("random", "by-class", "quantity-skew", "dirichlet")
ALPHA_DECAYS = ("none", "linear", "power")
HIFR_MODES = ("2d", "3d")
MIXINGS = ("none", "hellinger")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "multistep")
LR_CLOCKS = ("round", "local")
AUGMENTS = ("auto", "none", "flip", "flip-rot")
EVAL_SOURCES = ("holdout", "split", "folder")
#: the data.source values with a standard test split for eval.source = split
SPLIT_SOURCES = ("reds", "vimeo90k", "kinetics")
EVAL_CHANNELS = ("y", "rgb", "y+rgb")


@dataclass
class ModelConfig:
    name: str = _spec("efvsr", "registered model family (`fedvsr models` lists them)")
    preset: str = _spec("small", "size preset of the family")
    options: dict = _spec(None, "constructor arguments overriding the preset's", factory=dict)


@dataclass
class DataConfig:
    source: str = _spec("synthetic", "where videos come from: synthetic (built-in); folder (video files and frame "
                        "folders under data.root, label = the folder under the root); reds (train_sharp/<clip>/, "
                        "train split = all but REDS4); vid4 (GT/<clip>/, a test set); vimeo90k (vimeo_septuplet/"
                        "sequences with sep_trainlist.txt); kinetics (<class>/<video>.mp4, or train/ and val/ "
                        "above the classes; label = the class). Pre-made LR frames (REDS train_sharp_bicubic/X4, "
                        "BIx4 / BDx4, vimeo_septuplet_matlabLRx4) replace the resampling of the HR frames when "
                        "present", choices=DATA_SOURCES)
    root: str = _spec("", "dataset folder (folder and dataset sources); synthetic: the folder holding the built "
                          "videos, one synthetic-<key> folder per seed and size (default: $FEDVSR_CACHE or "
                          "~/.cache/fedvsr)")
    degradation: str = _spec("bicubic", "how LR videos are made from HR videos: bicubic; blur-h264 (Gaussian "
                             "blur + subsampling + H.264 at data.crf); hevc (bicubic + HEVC at data.qp)",
                             choices=DEGRADATIONS)
    crf: int = _spec(25, "blur-h264: H.264 constant rate factor (FCA2 paper: 15, 25, 35)", min=0, max=51)
    qp: int = _spec(32, "hevc: HEVC quantisation parameter (FCVSR paper: 22, 27, 32, 37)", min=0, max=51)
    scale: int = _spec(4, "super-resolution factor", choices=(2, 3, 4))
    clip_frames: int = _spec(0, "frames per training clip; 0 = the model's number of input frames", min=0)
    patch: int = _spec(32, "LR training crop size in pixels (HR crop = patch * scale)", min=4)
    samples_per_video: int = _spec(16, "random clips drawn from each video per local epoch", min=1)
    augment: str = _spec("auto", "training-clip augmentation: flip (horizontal, vertical, temporal reversal), "
                         "flip-rot (flip plus 90-degree rotations: all 8 orientations), none; auto = flip-rot for "
                         "a rotation-safe model (every shipped family), else flip", choices=AUGMENTS)
    videos: int = _spec(28, "synthetic: number of videos generated (clients + held-out)", min=2)
    frames: int = _spec(16, "synthetic: frames per video", min=1)
    height: int = _spec(128, "synthetic: HR frame height", min=16)
    width: int = _spec(128, "synthetic: HR frame width", min=16)


@dataclass
class FLConfig:
    strategy: str = _spec("fedavg", "federated strategy", choices=STRATEGIES)
    clients: int = _spec(8, "number of simulated clients", min=1)
    clients_per_round: int = _spec(4, "clients sampled each round", min=1)
    rounds: int = _spec(20, "communication rounds", min=1)
    local_epochs: int = _spec(1, "local epochs per round", min=1)
    batch_size: int = _spec(8, "local mini-batch size", min=1)
    lr: float = _spec(2e-3, "client learning rate", min=0.0, min_exclusive=True)
    optimizer: str = _spec("adam", "client optimizer (fresh each round)", choices=OPTIMIZERS)
    lr_schedule: str = _spec("constant", "learning-rate schedule: constant; cosine (annealing to fl.lr_min over "
                             "the clock's horizon: FCA2, VRT/RVRT); multistep (times fl.lr_gamma at each of "
                             "fl.lr_milestones: FCVSR halves at 2K, 8K, 12K of 30K)", choices=LR_SCHEDULES)
    lr_clock: str = _spec("round", "what the schedule counts: round (global round t-1 of fl.rounds; one rate "
                          "for a whole round) or local (the client's local step within the round, of all its "
                          "steps that round; restarts each round, as the optimizer does)", choices=LR_CLOCKS)
    lr_warmup: int = _spec(0, "linear warm-up over the first N clock units (rate * (i+1)/N)", min=0)
    lr_min: float = _spec(0.0, "cosine: the rate reached at the end of the horizon", min=0.0)
    lr_milestones: list = _spec(None, "multistep: clock positions (0-based, increasing) where the rate is "
                                "multiplied by fl.lr_gamma", factory=list)
    lr_gamma: float = _spec(0.5, "multistep: factor at each milestone", min=0.0, min_exclusive=True)
    clip_grad_norm: float = _spec(0.0, "clip each optimizer's gradients to this total L2 norm before its "
                                  "step (after SCAFFOLD's correction); 0 = off", min=0.0)
    partition: str = _spec("random", "how videos are split among clients: random ('less heterogeneous'), "
                           "by-class (one class per client, 'more heterogeneous'), quantity-skew, dirichlet",
                           choices=PARTITIONS)
    dirichlet_beta: float = _spec(0.5, "concentration of the quantity-skew / dirichlet partitions", min=0.0,
                                  min_exclusive=True)
    mu: float = _spec(0.001, "FedProx: weight of the proximal term (mu/2) * squared distance to the global "
                      "weights (FedVSR paper: any mu above 1e-3 hurts VSR training)", min=0.0)
    server_lr: float = _spec(1.0, "SCAFFOLD: global step size eta_g", min=0.0, min_exclusive=True)
    lambda_vsr: float = _spec(1.0, "FedVSR: weight of the model's own loss L_VSR", min=0.0)
    lambda_hifr: float = _spec(1.0, "FedVSR: weight of the DWT high-frequency loss L_HiFr", min=0.0)
    hifr_mode: str = _spec("2d", "FedVSR: DWT of L_HiFr per frame (2d) or over (T, H, W) (3d)", choices=HIFR_MODES)
    hifr_eps: float = _spec(1e-3, "FedVSR: Charbonnier epsilon of L_HiFr (the authors' code: about 3.2e-5)",
                            min=0.0, min_exclusive=True)
    alpha: float = _spec(1.0, "FedVSR: exponent strength of the loss-aware weights (1/L_i)^a_t", min=0.0)
    alpha_decay: str = _spec("linear", "FedVSR: none (greedy), linear a_t = alpha(1-t/T), power alpha^(1-t/T)",
                             choices=ALPHA_DECAYS)
    mixing: str = _spec("none", "FedVSR: 'hellinger' blends loss-aware and uniform weights (authors' code)",
                        choices=MIXINGS)


@dataclass
class PlatformConfig:
    workers: int = _spec(2, "long-lived worker actors training clients", min=1)
    cpus_per_worker: float = _spec(1.0, "CPUs reserved per worker (also its torch threads)", min=0.0,
                                   min_exclusive=True)
    gpus_per_worker: float = _spec(0.0, "GPUs per worker; fractions share a GPU", min=0.0, max=8.0)
    address: str = _spec("", "Ray cluster address; empty = start a local Ray; 'auto' = the running cluster")


@dataclass
class EvalConfig:
    source: str = _spec("holdout", "evaluation videos: holdout (eval.holdout videos of the training source, "
                        "kept from the clients); split (the dataset's own test split: REDS4 for reds, sep_testlist "
                        "for vimeo90k, val/ for kinetics; the clients get the training split); folder (the videos "
                        "under eval.root, e.g. train on REDS, test on Vid4)", choices=EVAL_SOURCES)
    root: str = _spec("", "folder of the evaluation videos (eval.source = folder): a REDS, Vid4 (GT/ with BIx4/, "
                      "BDx4/) or Vimeo-90K root gives its test split, any other folder every video under it")
    holdout: int = _spec(4, "videos held out from the clients for evaluation (eval.source = holdout)", min=0)
    clips: int = _spec(8, "evaluation clips (whole frames) drawn from the evaluation videos", min=1)
    channels: str = _spec("y", "PSNR / SSIM on y (BT.601 luma, as the papers report), rgb, or y+rgb (psnr, "
                          "ssim on Y plus psnr_rgb, ssim_rgb)", choices=EVAL_CHANNELS)


@dataclass
class ExperimentConfig:
    seed: int = _spec(0, "seed of everything: data, partition, sampling, init, local training", min=0)
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
    bad = ConfigError(f"{key} = {value!r} is not allowed; expected {_allowed(f)}")
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
        raise ConfigError(f"override {text!r}: cannot parse the value: {err}") from None
    return key, value


def config_from_dict(values: dict[str, Any]) -> ExperimentConfig:
    cfg = _build(ExperimentConfig, values or {}, "")
    validate(cfg)
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Build and validate the config from a YAML file (optional) and ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
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
    _check_schedule(fl)
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
    if data.source == "synthetic":
        client_videos = data.videos - held
        if client_videos < fl.clients:
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

    try:
        with torch.device("meta"):
            build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(
            f"model.options = {cfg.model.options!r} cannot build {cfg.model.name}/{cfg.model.preset}: {err}"
        ) from None


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
