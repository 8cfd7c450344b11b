"""The experiment configuration's checks that involve several keys, the model registry or the strategy
registry (:func:`validate`), and which keys can change a run's numbers (:func:`key_applies`).

:func:`fedvsr.config.config_from_dict` calls :func:`validate` on every config it builds, so each of these
is a :class:`~fedvsr.fields.ConfigError` before Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedvsr.fields import ConfigError
from fedvsr.fl.registry import all_key_fields, get_strategy

if TYPE_CHECKING:
    from fedvsr.config_sections import DataConfig, ExperimentConfig, FLConfig

#: the data.source values with a standard test split for eval.source = split
SPLIT_SOURCES = ("reds", "vimeo90k", "kinetics")


def validate(cfg: ExperimentConfig) -> None:
    """Checks that involve several keys, or the model registry (in this order: the first failing one is said)."""
    fl, data = cfg.fl, cfg.data
    if fl.clients_per_round > fl.clients:
        raise ConfigError(
            f"fl.clients_per_round = {fl.clients_per_round} is larger than fl.clients = {fl.clients}; "
            f"allowed: 1 <= fl.clients_per_round <= fl.clients"
        )
    if fl.min_clients > fl.clients_per_round:
        raise ConfigError(
            f"fl.min_clients = {fl.min_clients} is larger than fl.clients_per_round = "
            f"{fl.clients_per_round}: every round would fail; allowed: 0 <= fl.min_clients <= "
            f"fl.clients_per_round"
        )
    entry, num_frames = _check_model(cfg)
    _check_hifr_mode(cfg, entry.cls.center_output)
    _check_schedule(fl)
    if fl.stragglers > 0 and fl.deadline == 0:
        raise ConfigError(
            f"fl.stragglers = {fl.stragglers} has no effect without a deadline: client speeds only "
            f"scale fl.deadline; set fl.deadline > 0 or fl.stragglers = 0"
        )
    _check_eval(cfg)
    if data.augment == "flip-rot" and not getattr(entry.cls, "rotation_safe", True):
        raise ConfigError(
            f"data.augment = 'flip-rot': {cfg.model.name} is not rotation-safe; allowed: auto, flip, none"
        )
    _check_videos(cfg, num_frames)
    _check_degradation(data)
    if fl.partition == "by-degradation" and data.degradation != "bicubic":
        raise ConfigError(
            f"data.degradation = {data.degradation!r} is not used with fl.partition = 'by-degradation', "
            f"which gives every client its own device's degradation (and the evaluation videos each "
            f"kind in turn); allowed: data.degradation = 'bicubic' (the default), or another "
            f"fl.partition"
        )


def _check_model(cfg: ExperimentConfig) -> tuple[Any, int]:
    """The model's name and preset, that it builds, and its input frames against data.clip_frames; returns its
    registry entry and its number of input frames."""
    from fedvsr.models.registry import get_entry, preset_kwargs

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
    clip_frames = cfg.data.clip_frames
    if clip_frames and entry.cls.center_output and clip_frames != num_frames:
        raise ConfigError(
            f"data.clip_frames = {clip_frames} does not match the {num_frames} input frames of "
            f"{cfg.model.name}/{cfg.model.preset}, which restores the centre frame; allowed: 0 or {num_frames}"
        )
    return entry, num_frames


def _check_eval(cfg: ExperimentConfig) -> None:
    """The evaluation source against its keys and the data source."""
    ev, data = cfg.eval, cfg.data
    if ev.source == "holdout" and ev.holdout < 1:
        raise ConfigError(
            "eval.holdout = 0 leaves no evaluation video with eval.source = 'holdout'; allowed: "
            "eval.holdout >= 1, or eval.source = 'folder' with eval.root"
        )
    if ev.source == "folder" and not ev.root:
        raise ConfigError("eval.root = '' must name the folder of evaluation videos when eval.source = 'folder'")
    if ev.source == "split" and data.source not in SPLIT_SOURCES:
        why = (
            "Vid4 is a test set with no training split; use it as eval.root with eval.source = 'folder'"
            if data.source == "vid4"
            else "it has no standard test split"
        )
        raise ConfigError(
            f"eval.source = 'split' is not allowed with data.source = {data.source!r}: {why}; allowed: "
            f"data.source one of {', '.join(map(repr, SPLIT_SOURCES))}, or eval.source 'holdout' / "
            f"'folder'"
        )


def _check_videos(cfg: ExperimentConfig, num_frames: int) -> None:
    """Segments, clips and the built-in videos' count and size against the clients and the model."""
    data, fl, ev = cfg.data, cfg.fl, cfg.eval
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


def _check_degradation(data: DataConfig) -> None:
    """The degradation keys against one another: the fca2-mix CRF range, the VSRGAN operations, the LR cache."""
    if data.mix_crf_min > data.mix_crf_max:
        raise ConfigError(
            f"data.mix_crf_min = {data.mix_crf_min} is larger than data.mix_crf_max = "
            f"{data.mix_crf_max}; allowed: data.mix_crf_min <= data.mix_crf_max"
        )
    from fedvsr.data.degrade import VSRGAN_OPS, parse_ops

    try:
        ops = parse_ops(data.vsrgan_ops)
    except ValueError as err:
        raise ConfigError(f"data.vsrgan_ops = {data.vsrgan_ops!r}: {err}") from None
    if not ops and data.degradation == "vsrgan":
        raise ConfigError(
            f"data.vsrgan_ops = {data.vsrgan_ops!r} names no operation; allowed: a comma-separated "
            f"subset of {', '.join(VSRGAN_OPS)}"
        )
    if data.lr_cache not in ("", "none", "off") and Path(data.lr_cache).expanduser().is_file():
        raise ConfigError(
            f"data.lr_cache = {data.lr_cache!r} is a file; allowed: '' (the default folder), 'none', or a folder"
        )


def _check_hifr_mode(cfg: ExperimentConfig, center_output: bool) -> None:
    """3D L_HiFr needs a clip (b, t, c, H, W) out of the model; a centre-output model returns one frame."""
    reads = get_strategy(cfg.fl.strategy).keys()
    if "hifr_mode" in reads and cfg.fl.params.hifr_mode == "3d" and center_output:
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
            raise ConfigError(
                "fl.lr_schedule = 'multistep' needs fl.lr_milestones, e.g. [5, 10] (clock positions "
                "where the rate is multiplied by fl.lr_gamma)"
            )
        if any(m < 1 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
            raise ConfigError(f"fl.lr_milestones = {ms} is not allowed; expected increasing integers >= 1")
        if fl.lr_clock == "round" and ms[-1] >= fl.rounds:
            raise ConfigError(
                f"fl.lr_milestones = {ms}: {ms[-1]} is never reached with fl.lr_clock = 'round' "
                f"and fl.rounds = {fl.rounds} (positions 0 .. {fl.rounds - 1}); allowed: milestones "
                f"< fl.rounds"
            )
    elif ms:
        raise ConfigError(
            f"fl.lr_milestones = {ms} is only used by fl.lr_schedule = 'multistep' (it is "
            f"{fl.lr_schedule!r}); remove it or change the schedule"
        )
    if fl.lr_schedule == "cosine" and fl.lr_min >= fl.lr:
        raise ConfigError(f"fl.lr_min = {fl.lr_min} must be below fl.lr = {fl.lr} for the cosine schedule")
    if fl.lr_clock == "round" and fl.lr_warmup >= fl.rounds:
        raise ConfigError(
            f"fl.lr_warmup = {fl.lr_warmup} rounds is not shorter than fl.rounds = {fl.rounds}; "
            f"allowed: 0 <= fl.lr_warmup < fl.rounds (or fl.lr_clock = 'local')"
        )


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
        raise ConfigError(
            f"{key} = {value} is not allowed; integers in model.options are at most {MAX_MODEL_OPTION} "
            f"in size (model sizes and counts)"
        )


# --------------------------------------------------------------------------------------- applicability

#: key (or ``prefix*``) -> (the key it depends on, the values under which it is used). Read from the code that
#: uses each key: degrade.params, fl.schedule, fl.partition, the coordinator's deadline and straggler draws, and
#: the data and eval sources. A strategy's keys (``fl.mu``) apply where the strategy registry says the chosen
#: strategy reads them (:meth:`fedvsr.fl.registry.StrategyEntry.keys`).
KEY_CONDITIONS: dict[str, tuple[str, tuple]] = {
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
    section, _, name = key.rpartition(".")
    if section == "fl" and name in all_key_fields():  # a strategy's key: read by the chosen strategy?
        strategy = flat_config.get("fl.strategy")
        try:
            return strategy is None or name in get_strategy(strategy).keys()
        except KeyError:  # a strategy this version does not know: keep the value
            return True
    condition = KEY_CONDITIONS.get(key)
    if condition is None:
        starred = f"{section}.{name.split('_', 1)[0]}_*" if "_" in name else None
        condition = KEY_CONDITIONS.get(starred) if starred else None
    if condition is None:
        return True
    on, values = condition
    return on not in flat_config or flat_config[on] in values
