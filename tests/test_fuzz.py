"""The fuzz suite: invalid configs, sweep specs, files and output folders through the real `fedvsr` entry point.

Every case runs ``fedvsr.cli.main([...])`` in this process and must end with exit code 2 and exactly one line
``fedvsr: ...`` on stderr that names the key or the file, no traceback, nothing on stdout, and Ray never started
(``ray.init`` is replaced by a function that fails the test, so a case that slipped through could not start an
experiment either). The cases come from issue 23 (a hostile but fair user) and from each kind of check: types,
ranges, unknown keys, sections used as keys, cross-key conflicts, files, output folders, what this machine holds.
``@D`` in an argument is the folder of test files made by the ``files`` fixture.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest
import ray
import yaml

from fedvsr.cli import main

# (id, arguments after `fedvsr`, text the one line must hold): invalid experiment configs
CONFIG_CASES: list[tuple[str, list[str], str]] = [
    # -- issue 23: a hang, tracebacks, and runs that should never have started
    (
        "seed-2^64+1",
        ["--set", "seed=18446744073709551617"],
        "seed = 18446744073709551617 is not allowed; expected an integer >= 0 and <= 9223372036854775807",
    ),
    ("seed-2^63", ["--set", "seed=9223372036854775808"], "seed = 9223372036854775808 is not allowed"),
    ("data-seed-2^64", ["--set", "data.seed=18446744073709551616"], "data.seed = 18446744073709551616 is not allowed"),
    (
        "videos-1e8",
        ["--set", "data.videos=100000000"],
        "data.videos = 100000000 is not allowed; expected an integer >= 2 and <= 1000000",
    ),
    ("frame-65536", ["--set", "data.height=65536", "--set", "data.width=65536"], "data.height = 65536 is not allowed"),
    (
        "rounds-1e12",
        ["--set", "fl.rounds=1.0e+12"],
        "fl.rounds = 1000000000000.0 is not allowed; expected an integer >= 1 and <= 100000",
    ),
    (
        "batch-1e8",
        ["--set", "fl.batch_size=100000000"],
        "fl.batch_size = 100000000 is not allowed; expected an integer >= 1 and <= 4096",
    ),
    ("lr-1e300", ["--set", "fl.lr=1e300"], "fl.lr = '1e300' is not allowed; expected a number > 0.0 and <= 10.0"),
    (
        "workers-vs-cpus",
        ["--set", "platform.workers=10000"],
        "platform.workers = 10000 x platform.cpus_per_worker = 1 needs 10000 CPUs but this machine has",
    ),
    (
        "cpus-per-worker-vs-cpus",
        ["--set", "platform.workers=1", "--set", "platform.cpus_per_worker=1024"],
        "platform.workers = 1 x platform.cpus_per_worker = 1024 needs 1024 CPUs",
    ),
    (
        "video-vs-memory",
        ["--set", "data.frames=10000", "--set", "data.height=8192", "--set", "data.width=8192"],
        "data.frames x data.height x data.width x 3 bytes = 10000 x 8192 x 8192 x 3 = 1.8 TiB each",
    ),
    (
        "client-videos-vs-memory",
        ["--set", "data.videos=1000000", "--set", "data.frames=1000"],
        "data.videos = 1000000 built-in videos of",
    ),
    (
        "model-vs-memory",
        ["--set", "model.options={channels: 60000}"],
        "model.options = {'channels': 60000} gives efvsr/small 550,807,560,003 parameters",
    ),
    (
        "model-option-huge",
        ["--set", "model.options={blocks: 100000000}"],
        "model.options.blocks = 100000000 is not allowed",
    ),
    (
        "model-option-nested",
        ["--set", "model.name=fca2", "--set", "model.options={backbone_options: {blocks: 1e6}}"],
        "model.options",
    ),
    # -- types
    ("rounds-word", ["--set", "fl.rounds=abc"], "fl.rounds = 'abc' is not allowed"),
    ("rounds-fraction", ["--set", "fl.rounds=2.5"], "fl.rounds = 2.5 is not allowed"),
    ("rounds-bool", ["--set", "fl.rounds=true"], "fl.rounds = True is not allowed"),
    ("rounds-list", ["--set", "fl.rounds=[1]"], "fl.rounds = [1] is not allowed"),
    ("rounds-mapping", ["--set", "fl.rounds={a: 1}"], "fl.rounds = {'a': 1} is not allowed"),
    ("rounds-null", ["--set", "fl.rounds=null"], "fl.rounds = None is not allowed"),
    ("rounds-inf", ["--set", "fl.rounds=.inf"], "fl.rounds = inf is not allowed"),
    ("lr-word", ["--set", "fl.lr=fast"], "fl.lr = 'fast' is not allowed"),
    ("lr-bool", ["--set", "fl.lr=true"], "fl.lr = True is not allowed"),
    ("lr-nan", ["--set", "fl.lr=.nan"], "fl.lr = nan is not allowed"),
    ("lr-inf", ["--set", "fl.lr=.inf"], "fl.lr = inf is not allowed"),
    ("lr-list", ["--set", "fl.lr=[0.1]"], "fl.lr = [0.1] is not allowed"),
    ("strategy-number", ["--set", "fl.strategy=1"], "fl.strategy = 1 is not allowed"),
    ("strategy-list", ["--set", "fl.strategy=[fedavg]"], "fl.strategy = ['fedavg'] is not allowed"),
    ("strategy-unknown", ["--set", "fl.strategy=fedsgd"], "fl.strategy = 'fedsgd' is not allowed; expected one of"),
    ("model-name-number", ["--set", "model.name=3"], "model.name = 3 is not allowed"),
    ("model-name-unknown", ["--set", "model.name=vrt"], "model.name = 'vrt'"),
    ("model-name-import", ["--set", "model.name=pkg.module:Class"], "model.name = 'pkg.module:Class'"),
    ("model-name-not-class", ["--set", "model.name=os:system"], "model.name = 'os:system'"),
    ("model-preset", ["--set", "model.preset=huge"], "model.preset = 'huge' is not a preset of 'efvsr'"),
    ("model-options-number", ["--set", "model.options=3"], "model.options = 3 is not allowed"),
    ("model-options-list", ["--set", "model.options=[1]"], "model.options = [1] is not allowed"),
    ("model-options-unknown", ["--set", "model.options={colour: 3}"], "model.options = {'colour': 3} cannot build"),
    ("model-options-negative", ["--set", "model.options={channels: -3}"], "model.options = {'channels': -3}"),
    ("model-options-frames", ["--set", "model.options={num_frames: 4}"], "model.options = {'num_frames': 4}"),
    ("root-list", ["--set", "data.root=[a]"], "data.root = ['a'] is not allowed"),
    ("address-number", ["--set", "platform.address=5"], "platform.address = 5 is not allowed"),
    ("milestones-words", ["--set", "fl.lr_milestones=[a]"], "fl.lr_milestones = ['a'] is not allowed"),
    ("milestones-fraction", ["--set", "fl.lr_milestones=1.5"], "fl.lr_milestones = 1.5 is not allowed"),
    (
        "oversubscribe-number",
        ["--set", "platform.oversubscribe=1"],
        "platform.oversubscribe = 1 is not allowed; expected true/false",
    ),
    ("oversubscribe-word", ["--set", "platform.oversubscribe=maybe"], "platform.oversubscribe = 'maybe'"),
    ("scale-fraction", ["--set", "data.scale=2.5"], "data.scale = 2.5 is not allowed"),
    ("scale-5", ["--set", "data.scale=5"], "data.scale = 5 is not allowed; expected one of 1, 2, 3, 4"),
    ("channels-number", ["--set", "eval.channels=5"], "eval.channels = 5 is not allowed"),
    ("source-unknown", ["--set", "data.source=lmdb"], "data.source = 'lmdb' is not allowed"),
    ("degradation-unknown", ["--set", "data.degradation=jpeg"], "data.degradation = 'jpeg' is not allowed"),
    ("content-unknown", ["--set", "data.content=faces"], "data.content = 'faces' is not allowed"),
    ("augment-unknown", ["--set", "data.augment=rotate"], "data.augment = 'rotate' is not allowed"),
    ("seed-negative", ["--set", "seed=-1"], "seed = -1 is not allowed"),
    ("seed-fraction", ["--set", "seed=1.5"], "seed = 1.5 is not allowed"),
    ("seed-word", ["--set", "seed=abc"], "seed = 'abc' is not allowed"),
    # -- ranges
    ("rounds-0", ["--set", "fl.rounds=0"], "fl.rounds = 0 is not allowed"),
    ("rounds-100001", ["--set", "fl.rounds=100001"], "fl.rounds = 100001 is not allowed"),
    ("batch-0", ["--set", "fl.batch_size=0"], "fl.batch_size = 0 is not allowed"),
    ("lr-0", ["--set", "fl.lr=0"], "fl.lr = 0 is not allowed; expected a number > 0.0"),
    ("lr-negative", ["--set", "fl.lr=-1"], "fl.lr = -1 is not allowed"),
    ("lr-11", ["--set", "fl.lr=11"], "fl.lr = 11 is not allowed"),
    ("local-epochs-0", ["--set", "fl.local_epochs=0"], "fl.local_epochs = 0 is not allowed"),
    ("local-epochs-1001", ["--set", "fl.local_epochs=1001"], "fl.local_epochs = 1001 is not allowed"),
    ("clients-0", ["--set", "fl.clients=0"], "fl.clients = 0 is not allowed"),
    ("clients-100001", ["--set", "fl.clients=100001"], "fl.clients = 100001 is not allowed"),
    ("per-round-0", ["--set", "fl.clients_per_round=0"], "fl.clients_per_round = 0 is not allowed"),
    ("mu-negative", ["--set", "fl.mu=-0.1"], "fl.mu = -0.1 is not allowed"),
    ("mu-1e9", ["--set", "fl.mu=1e9"], "fl.mu = '1e9' is not allowed"),
    ("alpha-1e300", ["--set", "fl.alpha=1.0e+300"], "fl.alpha = 1e+300 is not allowed"),
    ("alpha-negative", ["--set", "fl.alpha=-1"], "fl.alpha = -1 is not allowed"),
    ("server-lr-0", ["--set", "fl.server_lr=0"], "fl.server_lr = 0 is not allowed"),
    ("server-lr-1e6", ["--set", "fl.server_lr=1000000"], "fl.server_lr = 1000000 is not allowed"),
    ("dropout-1.5", ["--set", "fl.dropout=1.5"], "fl.dropout = 1.5 is not allowed"),
    ("dropout-negative", ["--set", "fl.dropout=-0.1"], "fl.dropout = -0.1 is not allowed"),
    ("deadline-negative", ["--set", "fl.deadline=-1"], "fl.deadline = -1 is not allowed"),
    ("deadline-1e300", ["--set", "fl.deadline=1.0e+300"], "fl.deadline = 1e+300 is not allowed"),
    ("stragglers-1000", ["--set", "fl.stragglers=1000"], "fl.stragglers = 1000 is not allowed"),
    ("hifr-eps-0", ["--set", "fl.hifr_eps=0"], "fl.hifr_eps = 0 is not allowed"),
    ("hifr-eps-2", ["--set", "fl.hifr_eps=2"], "fl.hifr_eps = 2 is not allowed"),
    ("lambda-vsr-negative", ["--set", "fl.lambda_vsr=-1"], "fl.lambda_vsr = -1 is not allowed"),
    ("lambda-hifr-1e9", ["--set", "fl.lambda_hifr=1000000000"], "fl.lambda_hifr = 1000000000 is not allowed"),
    ("dirichlet-0", ["--set", "fl.dirichlet_beta=0"], "fl.dirichlet_beta = 0 is not allowed"),
    ("clip-grad-negative", ["--set", "fl.clip_grad_norm=-1"], "fl.clip_grad_norm = -1 is not allowed"),
    ("lr-gamma-0", ["--set", "fl.lr_gamma=0"], "fl.lr_gamma = 0 is not allowed"),
    ("lr-warmup-negative", ["--set", "fl.lr_warmup=-1"], "fl.lr_warmup = -1 is not allowed"),
    ("lr-min-negative", ["--set", "fl.lr_min=-1"], "fl.lr_min = -1 is not allowed"),
    ("videos-1", ["--set", "data.videos=1"], "data.videos = 1 is not allowed"),
    ("frames-0", ["--set", "data.frames=0"], "data.frames = 0 is not allowed"),
    ("frames-10001", ["--set", "data.frames=10001"], "data.frames = 10001 is not allowed"),
    ("width-65536", ["--set", "data.width=65536"], "data.width = 65536 is not allowed"),
    ("height-8", ["--set", "data.height=8"], "data.height = 8 is not allowed"),
    ("patch-2", ["--set", "data.patch=2"], "data.patch = 2 is not allowed"),
    ("patch-100000", ["--set", "data.patch=100000"], "data.patch = 100000 is not allowed"),
    ("crf-52", ["--set", "data.crf=52"], "data.crf = 52 is not allowed"),
    ("qp-negative", ["--set", "data.qp=-1"], "data.qp = -1 is not allowed"),
    ("sigma-0", ["--set", "data.sigma=0"], "data.sigma = 0 is not allowed"),
    ("sigma-100", ["--set", "data.sigma=100"], "data.sigma = 100 is not allowed"),
    ("mix-compressed-2", ["--set", "data.mix_compressed=2"], "data.mix_compressed = 2 is not allowed"),
    ("vsrgan-prob-negative", ["--set", "data.vsrgan_prob=-1"], "data.vsrgan_prob = -1 is not allowed"),
    ("vsrgan-jpeg-0", ["--set", "data.vsrgan_jpeg_quality=0"], "data.vsrgan_jpeg_quality = 0 is not allowed"),
    ("hr-cache-negative", ["--set", "data.hr_cache_mb=-1"], "data.hr_cache_mb = -1 is not allowed"),
    ("samples-0", ["--set", "data.samples_per_video=0"], "data.samples_per_video = 0 is not allowed"),
    ("clip-frames-negative", ["--set", "data.clip_frames=-1"], "data.clip_frames = -1 is not allowed"),
    ("segment-negative", ["--set", "data.segment_frames=-1"], "data.segment_frames = -1 is not allowed"),
    ("workers-0", ["--set", "platform.workers=0"], "platform.workers = 0 is not allowed"),
    ("workers-10001", ["--set", "platform.workers=10001"], "platform.workers = 10001 is not allowed"),
    ("cpus-per-worker-0", ["--set", "platform.cpus_per_worker=0"], "platform.cpus_per_worker = 0 is not allowed"),
    ("gpus-per-worker-9", ["--set", "platform.gpus_per_worker=9"], "platform.gpus_per_worker = 9 is not allowed"),
    ("max-retries-negative", ["--set", "platform.max_retries=-1"], "platform.max_retries = -1 is not allowed"),
    ("queue-depth-9", ["--set", "platform.queue_depth=9"], "platform.queue_depth = 9 is not allowed"),
    ("holdout-negative", ["--set", "eval.holdout=-1"], "eval.holdout = -1 is not allowed"),
    ("clips-0", ["--set", "eval.clips=0"], "eval.clips = 0 is not allowed"),
    # -- unknown keys, sections used as keys, override syntax
    ("unknown-in-section", ["--set", "fl.bogus=1"], "unknown key 'fl.bogus'; allowed keys in 'fl':"),
    ("unknown-top", ["--set", "foo=1"], "unknown key 'foo'; allowed keys: data, eval, fl, model, platform, seed"),
    ("unknown-case", ["--set", "FL.rounds=1"], "unknown key 'FL'"),
    ("empty-part", ["--set", "data..root=x"], "unknown key 'data.'"),
    ("dot-only", ["--set", ".=1"], "unknown key ''"),
    ("key-as-section", ["--set", "fl.rounds.x=1"], "fl.rounds = {'x': 1} is not allowed"),
    ("bool-as-section", ["--set", "platform.oversubscribe.x=1"], "platform.oversubscribe = {'x': 1} is not allowed"),
    ("section-number", ["--set", "fl=3"], "fl = 3 is not allowed; expected a mapping of fl.* keys"),
    ("section-word", ["--set", "data=abc"], "data = 'abc' is not allowed"),
    ("section-list", ["--set", "model=[1]"], "model = [1] is not allowed"),
    ("section-bool", ["--set", "platform=true"], "platform = True is not allowed"),
    ("section-then-key", ["--set", "fl=3", "--set", "fl.rounds=2"], "fl.rounds: 'fl' is not a section"),
    ("no-equals", ["--set", "nonsense"], "override 'nonsense' is not of the form key=value"),
    ("empty-key", ["--set", "=1"], "override '=1' has an empty key"),
    ("unclosed-list", ["--set", "fl.lr=[1, 2"], "override 'fl.lr=[1, 2': cannot parse the value"),
    ("yaml-reserved", ["--set", "fl.lr=@x"], "override 'fl.lr=@x': cannot parse the value"),
    # -- keys against one another
    (
        "per-round-above-clients",
        ["--set", "fl.clients_per_round=20"],
        "fl.clients_per_round = 20 is larger than fl.clients = 8",
    ),
    ("clients-above-videos", ["--set", "fl.clients=30"], "data.videos = 28 leaves 24 videos after eval.holdout = 4"),
    ("height-not-multiple", ["--set", "data.height=102"], "data.height = 102 must be a multiple of data.scale = 4"),
    ("patch-above-frame", ["--set", "data.patch=64"], "allowed: data.height >= 256"),
    ("folder-without-root", ["--set", "data.source=folder"], "data.root = '' must name the dataset folder"),
    ("eval-folder-without-root", ["--set", "eval.source=folder"], "eval.root = '' must name the folder"),
    ("split-on-synthetic", ["--set", "eval.source=split"], "eval.source = 'split' is not allowed with data.source"),
    ("holdout-0", ["--set", "eval.holdout=0"], "eval.holdout = 0 leaves no evaluation video"),
    (
        "clip-frames-vs-model",
        ["--set", "data.clip_frames=5"],
        "data.clip_frames = 5 does not match the 3 input frames of efvsr/small",
    ),
    (
        "crf-range-reversed",
        ["--set", "data.mix_crf_min=40", "--set", "data.mix_crf_max=20"],
        "data.mix_crf_min = 40 is larger than data.mix_crf_max = 20",
    ),
    (
        "multistep-without-milestones",
        ["--set", "fl.lr_schedule=multistep"],
        "fl.lr_schedule = 'multistep' needs fl.lr_milestones",
    ),
    ("milestones-without-multistep", ["--set", "fl.lr_milestones=[3]"], "fl.lr_milestones = [3] is only used by"),
    (
        "milestones-decreasing",
        ["--set", "fl.lr_schedule=multistep", "--set", "fl.lr_milestones=[5, 3]"],
        "fl.lr_milestones = [5, 3] is not allowed",
    ),
    (
        "milestone-never-reached",
        ["--set", "fl.lr_schedule=multistep", "--set", "fl.lr_milestones=[30]"],
        "fl.lr_milestones = [30]: 30 is never reached",
    ),
    (
        "cosine-min-above-lr",
        ["--set", "fl.lr_schedule=cosine", "--set", "fl.lr_min=1"],
        "fl.lr_min = 1.0 must be below fl.lr",
    ),
    ("warmup-above-rounds", ["--set", "fl.lr_warmup=20"], "fl.lr_warmup = 20 rounds is not shorter than fl.rounds"),
    (
        "stragglers-without-deadline",
        ["--set", "fl.stragglers=1"],
        "fl.stragglers = 1.0 has no effect without a deadline",
    ),
    (
        "segment-below-clip",
        ["--set", "data.segment_frames=2"],
        "data.segment_frames = 2 is shorter than a training clip",
    ),
    (
        "segment-above-frames",
        ["--set", "data.segment_frames=100"],
        "data.segment_frames = 100 is longer than the videos",
    ),
    ("vsrgan-ops-unknown", ["--set", "data.vsrgan_ops=blur,sharpen"], "data.vsrgan_ops = 'blur,sharpen'"),
    (
        "vsrgan-ops-none",
        ["--set", "data.degradation=vsrgan", "--set", "data.vsrgan_ops="],
        "data.vsrgan_ops = '' names no operation",
    ),
    ("scale-vs-model", ["--set", "data.scale=2"], "data.scale = 2 does not match efvsr/small"),
    ("lr-cache-is-a-file", ["--set", "data.lr_cache=@D/a_file"], "data.lr_cache = "),
    ("nul-in-root", ["--config", "@D/nul.yaml"], "data.root = 'a\\x00b' is not allowed: it holds a NUL character"),
    # -- config files
    ("config-not-utf8", ["--config", "@D/b.yaml"], "config file '@D/b.yaml' is not UTF-8 text"),
    ("config-missing", ["--config", "@D/missing.yaml"], "config file '@D/missing.yaml' does not exist"),
    ("config-folder", ["--config", "@D/dir.yaml"], "config file '@D/dir.yaml' is a folder, not a YAML file"),
    ("config-fifo", ["--config", "@D/fifo.yaml"], "config file '@D/fifo.yaml' is not a regular file"),
    ("config-device", ["--config", "/dev/zero"], "config file '/dev/zero' is not a regular file"),
    ("config-too-big", ["--config", "@D/big.yaml"], "config file '@D/big.yaml' holds 17,825,792 bytes"),
    (
        "config-list",
        ["--config", "@D/list.yaml"],
        "config file '@D/list.yaml' must hold a mapping at the top level, not a list",
    ),
    ("config-scalar", ["--config", "@D/scalar.yaml"], "config file '@D/scalar.yaml' must hold a mapping"),
    ("config-bad-yaml", ["--config", "@D/bad.yaml"], "config file '@D/bad.yaml' is not valid YAML"),
    ("config-tabs", ["--config", "@D/tabs.yaml"], "config file '@D/tabs.yaml' is not valid YAML"),
    (
        "config-python-tag",
        ["--config", "@D/tag.yaml"],
        "config file '@D/tag.yaml' is not valid YAML: could not determine a constructor",
    ),
    ("config-deep", ["--config", "@D/deep.yaml"], "config file '@D/deep.yaml' is not valid YAML: nested too deeply"),
    ("config-section-number", ["--config", "@D/section.yaml"], "fl = 3 is not allowed"),
    ("config-dotted-key", ["--config", "@D/dotted.yaml"], "unknown key 'fl.rounds'"),
    ("config-unknown-section", ["--config", "@D/unknown.yaml"], "unknown key 'flx'"),
    ("config-bad-value", ["--config", "@D/lr.yaml"], "fl.lr = '1e300' is not allowed"),
    # -- output folders, --resume, replicates
    ("out-is-a-file", ["--out", "@D/a_file"], "--out '@D/a_file' is a file, not a folder"),
    ("out-under-a-file", ["--out", "@D/a_file/run"], "--out '@D/a_file/run' is under '@D/a_file', which is a file"),
    ("out-under-a-file-deep", ["--out", "@D/a_file/x/y"], "is under '@D/a_file', which is a file"),
    (
        "out-holds-other-files",
        ["--out", "@D/other"],
        "--out '@D/other' holds other files (notes.txt) and no fedvsr run",
    ),
    ("out-holds-a-sweep", ["--out", "@D/sweep"], "--out '@D/sweep' holds other files (sweep.yaml) and no fedvsr run"),
    ("out-holds-a-run", ["--out", "@D/run"], "output folder '@D/run' already holds a run; pass --resume"),
    ("resume-without-out", ["--resume"], "--resume needs --out DIR"),
    (
        "resume-with-set",
        ["--resume", "--out", "@D/run", "--set", "fl.rounds=999"],
        "--resume continues a run as it was started (the config saved in --out); --set cannot change it",
    ),
    ("resume-with-config", ["--resume", "--out", "@D/run", "--config", "@D/lr.yaml"], "--config cannot change it"),
    ("resume-with-replicates", ["--resume", "--out", "@D/run", "--replicates", "3"], "--replicates cannot change it"),
    ("resume-with-vary-data", ["--resume", "--out", "@D/run", "--vary-data"], "--vary-data cannot change it"),
    (
        "resume-empty-folder",
        ["--resume", "--out", "@D/empty"],
        "--resume: '@D/empty' holds no config.yaml or replicates.json of an earlier run",
    ),
    ("resume-missing-folder", ["--resume", "--out", "@D/nowhere"], "--resume: '@D/nowhere' holds no config.yaml"),
    ("replicates-0", ["--replicates", "0"], "--replicates = 0 is not allowed; expected an integer >= 1"),
    ("replicates-1001", ["--replicates", "1001"], "--replicates = 1001 is not allowed"),
    ("vary-data-alone", ["--vary-data"], "--vary-data needs --replicates N with N >= 2"),
    (
        "replicate-seeds-overflow",
        ["--set", "seed=9223372036854775807", "--replicates", "2"],
        "seed = 9223372036854775807 with --replicates 2 gives replicate seeds up to 9223372036854775808",
    ),
]

# other commands: train-central and best
OTHER_CASES: list[tuple[str, list[str], str]] = [
    ("central-workers-0", ["train-central", "--workers", "0"], "--workers = 0"),
    ("central-lr", ["train-central", "--set", "fl.lr=1e300"], "fl.lr = '1e300' is not allowed"),
    ("central-out-file", ["train-central", "--out", "@D/a_file"], "--out '@D/a_file' is a file"),
    ("central-config", ["train-central", "--config", "@D/b.yaml"], "config file '@D/b.yaml' is not UTF-8"),
    ("central-workers-vs-cpus", ["train-central", "--workers", "10000"], "needs 10000 CPUs but this machine has"),
    ("best-missing", ["best", "@D/nowhere"], "'@D/nowhere' is not a folder"),
    ("best-not-a-run", ["best", "@D/other"], "'@D/other' holds no sweep (sweep.yaml) and no run (config.yaml)"),
]

# a valid grid spec; each case below changes it (None deletes a key) or replaces the file
BASE_SPEC = {
    "search": "grid",
    "scheduler": "none",
    "fixed": {"fl.rounds": 4},
    "params": {"fl.lr": {"grid": [0.001, 0.002]}},
}
OPTUNA = {"search": "optuna", "trials": 4, "params": {"fl.lr": {"loguniform": [1e-4, 1e-2]}}}

# (id, spec changes or file name under @D, extra arguments, text the one line must hold)
SPEC_CASES: list[tuple[str, dict | str, list[str], str]] = [
    # -- files
    ("not-utf8", "b.yaml", [], "sweep spec file '@D/b.yaml' is not UTF-8 text"),
    ("folder", "dir.yaml", [], "sweep spec file '@D/dir.yaml' is a folder"),
    ("missing", "missing.yaml", [], "sweep spec file '@D/missing.yaml' does not exist"),
    ("fifo", "fifo.yaml", [], "sweep spec file '@D/fifo.yaml' is not a regular file"),
    ("list", "list.yaml", [], "sweep spec '@D/list.yaml' must hold a mapping at the top level, not a list"),
    ("empty", "empty.yaml", [], "sweep spec '@D/empty.yaml' must hold a mapping at the top level, not nothing"),
    ("bad-yaml", "bad.yaml", [], "sweep spec file '@D/bad.yaml' is not valid YAML"),
    ("unknown-name", "no-such-spec", [], "unknown sweep spec 'no-such-spec'"),
    # -- top-level keys
    ("unknown-top", {"budget": 3}, [], "unknown top-level key(s) budget"),
    ("metric", {"metric": "lpips"}, [], "metric = 'lpips' is not allowed"),
    ("search", {"search": "random"}, [], "search = 'random' is not allowed"),
    ("scheduler", {"scheduler": "hyperband"}, [], "scheduler = 'hyperband' is not allowed"),
    ("asha-list", {"asha": [2]}, [], "asha = [2]: expected a mapping"),
    ("asha-unknown", {"asha": {"grace": 2}}, [], "asha = {'grace': 2}: expected a mapping"),
    ("asha-grace-0", {"scheduler": "asha", "asha": {"grace_period": 0}}, [], "asha.grace_period = 0 is not allowed"),
    ("asha-factor-1", {"scheduler": "asha", "asha": {"reduction_factor": 1}}, [], "asha.reduction_factor = 1"),
    ("seed-negative", {"seed": -1}, [], "seed = -1 is not allowed"),
    ("seed-2^32", {"seed": 2**32}, [], "seed = 4294967296 is not allowed; expected an integer >= 0 and <= 4294967295"),
    ("replicates-0", {"replicates": 0}, [], "replicates = 0 is not allowed"),
    ("replicates-1001", {"replicates": 1001}, [], "replicates = 1001 is not allowed"),
    ("vary-data-word", {"vary_data": "yes please"}, [], "vary_data = 'yes please' is not allowed"),
    ("vary-data-alone", {"vary_data": True}, [], "vary_data = true needs replicates >= 2"),
    (
        "replicate-seeds",
        {"fixed": {"fl.rounds": 4, "seed": 2**63 - 1}, "replicates": 2},
        [],
        "seed = 9223372036854775807 with replicates = 2 gives replicate seeds above",
    ),
    # -- trials
    (
        "grid-with-trials",
        {"trials": 0},
        [],
        "trials = 0 is not allowed with search = 'grid', which runs each of its 2 points once",
    ),
    ("grid-with-other-trials", {"trials": 16}, [], "trials = 16 is not allowed with search = 'grid'"),
    ("grid-with-cli-trials", {}, ["--trials", "5"], "--trials = 5: sweep spec 'spec' is a grid"),
    ("optuna-without-trials", {**OPTUNA, "trials": None}, [], "trials = None: search = 'optuna' needs trials"),
    ("optuna-trials-0", {**OPTUNA, "trials": 0}, [], "trials = 0: search = 'optuna' needs trials"),
    ("optuna-trials-huge", {**OPTUNA, "trials": 10**6}, [], "trials = 1000000: search = 'optuna' needs trials"),
    ("optuna-cli-trials-0", OPTUNA, ["--trials", "0"], "trials = 0: search = 'optuna' needs trials"),
    # -- fixed keys
    ("fixed-list", {"fixed": ["fl.rounds"]}, [], "'fixed' must be a mapping"),
    ("fixed-bad-value", {"fixed": {"fl.mu": -1}}, [], "fl.mu = -1 is not allowed"),
    ("fixed-unknown", {"fixed": {"fl.bogus": 1}}, [], "unknown key 'fl.bogus'"),
    ("fixed-section", {"fixed": {"fl": 3}}, [], "'fl' is a section, not a key"),
    ("fixed-lr-1e300", {"fixed": {"fl.lr": 1e300}}, [], "fl.lr = 1e+300 is not allowed"),
    ("fixed-cross-key", {"fixed": {"fl.clients_per_round": 20}}, [], "the fixed keys do not make a valid experiment"),
    ("set-bad-value", {}, ["--set", "fl.rounds=1.0e+12"], "fl.rounds = 1000000000000.0 is not allowed"),
    ("set-swept-key", {}, ["--set", "fl.lr=0.1"], "--set fl.lr=... names a key the spec sweeps"),
    # -- parameters
    ("params-missing", {"params": None}, [], "'params' must be a non-empty mapping"),
    ("params-empty", {"params": {}}, [], "'params' must be a non-empty mapping"),
    ("param-not-mapping", {"params": {"fl.lr": 0.1}}, [], "parameter 'fl.lr': expected a mapping"),
    ("param-two-kinds", {"params": {"fl.lr": {"grid": [0.1], "choice": [0.2]}}}, [], "needs exactly one distribution"),
    ("param-unknown-field", {"params": {"fl.lr": {"grid": [0.1], "prior": 1}}}, [], "unknown field(s) prior"),
    ("param-unknown-key", {"params": {"fl.lrr": {"grid": [0.1]}}}, [], "unknown key 'fl.lrr'"),
    ("param-bad-value", {"params": {"fl.lr": {"grid": [0.1, -1]}}}, [], "fl.lr = -1 is not allowed"),
    ("param-empty-grid", {"params": {"fl.lr": {"grid": []}}}, [], "grid = []: expected a non-empty list"),
    ("param-duplicate", {"params": {"fl.lr": {"grid": [0.1, 0.1]}}}, [], "lists a value twice"),
    (
        "grid-with-uniform",
        {"params": {"fl.lr": {"uniform": [0.001, 0.01]}}},
        [],
        "search = 'grid' needs listed values, but 'fl.lr' has a continuous distribution",
    ),
    (
        "uniform-one-number",
        {**OPTUNA, "params": {"fl.lr": {"uniform": [0.1]}}},
        [],
        "uniform = [0.1]: expected [low, high]",
    ),
    ("uniform-reversed", {**OPTUNA, "params": {"fl.lr": {"uniform": [0.1, 0.01]}}}, [], "expected finite low < high"),
    (
        "uniform-out-of-range",
        {**OPTUNA, "params": {"fl.lr": {"uniform": [0.1, 100]}}},
        [],
        "fl.lr = 100.0 is not allowed",
    ),
    ("loguniform-zero", {**OPTUNA, "params": {"fl.lr": {"loguniform": [0, 0.1]}}}, [], "low must be > 0"),
    (
        "int-fraction",
        {**OPTUNA, "params": {"fl.rounds": {"int": [1.5, 4]}}},
        [],
        "int = [1.5, 4]: expected integer bounds",
    ),
    (
        "int-step-0",
        {**OPTUNA, "params": {"fl.rounds": {"int": [1, 4], "step": 0}}},
        [],
        "step = 0: expected an integer >= 1",
    ),
    (
        "int-log-from-0",
        {**OPTUNA, "params": {"fl.local_epochs": {"int": [0, 4], "log": True}}},
        [],
        "int with log: true needs low >= 1",
    ),
    (
        "int-above-range",
        {**OPTUNA, "params": {"fl.rounds": {"int": [1, 10**9]}}},
        [],
        "fl.rounds = 1000000000 is not allowed",
    ),
    (
        "joint-uniform",
        {"params": {"pair": {"keys": ["fl.lr", "fl.mu"], "uniform": [0, 1]}}},
        [],
        "a joint parameter (keys: [...]) takes choice/grid values",
    ),
    (
        "joint-one-key",
        {"params": {"pair": {"keys": ["fl.lr"], "grid": [[0.1]]}}},
        [],
        "keys = ['fl.lr']: expected a list of at least two config keys",
    ),
    (
        "joint-named-as-key",
        {"params": {"fl.lr": {"keys": ["fl.lr", "fl.mu"], "grid": [[0.1, 0.1]]}}},
        [],
        "a joint parameter's name must not be a config key",
    ),
    (
        "joint-wrong-length",
        {"params": {"pair": {"keys": ["fl.lr", "fl.mu"], "grid": [[0.1]]}}},
        [],
        "value [0.1] must be a list of 2 values",
    ),
    (
        "when-unknown",
        {"params": {"fl.mu": {"grid": [0.1], "when": {"fl.strategy": "fedprox"}}}},
        [],
        "when names 'fl.strategy', which is neither a fixed key nor a parameter listed earlier",
    ),
    (
        "when-never",
        {
            "fixed": {"fl.rounds": 4, "fl.strategy": "fedavg"},
            "params": {"fl.mu": {"grid": [0.1], "when": {"fl.strategy": "fedprox"}}},
        },
        [],
        "when fl.strategy in ['fedprox'] can never hold",
    ),
    ("when-not-mapping", {"params": {"fl.lr": {"grid": [0.1], "when": ["x"]}}}, [], "when = ['x']: expected a mapping"),
    (
        "affine-unknown-source",
        {"params": {"fl.lambda_vsr": {"affine": "fl.lambda_hifr"}}},
        [],
        "affine = 'fl.lambda_hifr' must name a fixed key or a parameter listed earlier",
    ),
    (
        "affine-scale-word",
        {"params": {"fl.lambda_hifr": {"grid": [0.5]}, "fl.lambda_vsr": {"affine": "fl.lambda_hifr", "scale": "x"}}},
        [],
        "scale = 'x': expected a number",
    ),
    (
        "affine-out-of-range",
        {"params": {"fl.lambda_hifr": {"grid": [0.5]}, "fl.lambda_vsr": {"affine": "fl.lambda_hifr", "scale": -4}}},
        [],
        "fl.lambda_vsr = -2.0 is not allowed",
    ),
    ("fixed-and-swept", {"fixed": {"fl.rounds": 4, "fl.lr": 0.1}}, [], "'fl.lr' is both fixed and swept"),
    (
        "swept-twice",
        {"params": {"fl.lr": {"grid": [0.1]}, "pair": {"keys": ["fl.lr", "fl.mu"], "grid": [[0.1, 0.1]]}}},
        [],
        "key(s) fl.lr set by more than one parameter",
    ),
    (
        "grid-point-invalid",
        {"params": {"fl.clients_per_round": {"grid": [4, 20]}}},
        [],
        "grid point fl.clients_per_round=20 is not a valid experiment",
    ),
    (
        "optuna-end-invalid",
        {**OPTUNA, "params": {"fl.clients_per_round": {"int": [1, 20]}}},
        [],
        "fl.clients_per_round = 20",
    ),
    # -- the machine, the output folder and the command line
    (
        "workers-vs-cpus",
        {"fixed": {"fl.rounds": 4, "platform.workers": 10000}},
        [],
        "platform.workers = 10000 x platform.cpus_per_worker = 1 needs 10000 CPUs",
    ),
    (
        "grid-point-vs-cpus",
        {"params": {"platform.workers": {"grid": [1, 10000]}}},
        [],
        "sweep spec 'spec', grid "
        "point platform.workers=10000: platform.workers = 10000 x platform.cpus_per_worker = 1 needs 10000 CPUs",
    ),
    ("out-is-a-file", {}, ["--out", "@D/a_file"], "--out '@D/a_file' is a file, not a folder"),
    ("out-under-a-file", {}, ["--out", "@D/a_file/sweep"], "is under '@D/a_file', which is a file"),
    (
        "out-holds-other-files",
        {},
        ["--out", "@D/other"],
        "--out '@D/other' holds other files (notes.txt) and no fedvsr sweep",
    ),
    ("out-holds-a-sweep", {}, ["--out", "@D/sweep"], "output folder '@D/sweep' already holds a sweep"),
    ("concurrent-0", {}, ["--concurrent", "0"], "--concurrent = 0 is not allowed"),
]

# `fedvsr sweep` lines that need no spec file
SWEEP_COMMAND_CASES: list[tuple[str, list[str], str]] = [
    ("no-spec", ["sweep"], "fedvsr sweep needs a SPEC"),
    ("resume-without-out", ["sweep", "--resume"], "--resume needs --out DIR"),
    (
        "resume-with-set",
        ["sweep", "--resume", "--out", "@D/sweep", "--set", "fl.rounds=3"],
        "--resume continues a sweep as it was started",
    ),
    ("resume-with-trials", ["sweep", "--resume", "--out", "@D/sweep", "--trials", "3"], "--resume continues a sweep"),
    (
        "resume-not-a-sweep",
        ["sweep", "--resume", "--out", "@D/other"],
        "--resume: '@D/other' holds no sweep.yaml of an earlier sweep",
    ),
    ("resume-missing", ["sweep", "--resume", "--out", "@D/nowhere"], "--resume: '@D/nowhere' holds no sweep.yaml"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The folder ``@D``: broken config files, a file, a folder of someone else's, a run, a sweep, an empty one."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "b.yaml").write_bytes(b"\xff" + random.Random(0).randbytes(199))  # `head -c 200 /dev/urandom`
    (d / "dir.yaml").mkdir()
    os.mkfifo(d / "fifo.yaml")  # opening it would block: it must be refused before that
    (d / "big.yaml").write_bytes(b"#" * (17 * 2**20))
    texts = {
        "list.yaml": "- 1\n- 2\n",
        "scalar.yaml": "3\n",
        "empty.yaml": "",
        "bad.yaml": "fl: [1, 2\n",
        "tabs.yaml": "fl:\n\trounds: 3\n",
        "tag.yaml": '!!python/object/apply:os.system ["echo hi"]\n',
        "deep.yaml": "[" * 5000 + "]" * 5000,
        "section.yaml": "fl: 3\n",
        "dotted.yaml": "fl.rounds: 3\n",
        "unknown.yaml": "flx: {rounds: 3}\n",
        "lr.yaml": "fl: {lr: 1e300}\n",
        "a_file": "not a folder\n",
        "nul.yaml": 'data: {source: folder, root: "a\\0b"}\n',
    }
    for name, text in texts.items():
        (d / name).write_text(text)
    (d / "other").mkdir()
    (d / "other" / "notes.txt").write_text("someone else's\n")
    (d / "empty").mkdir()
    (d / "run").mkdir()
    (d / "run" / "config.yaml").write_text("seed: 0\n")
    (d / "sweep").mkdir()
    (d / "sweep" / "sweep.yaml").write_text(yaml.safe_dump({"name": "s", **BASE_SPEC}))
    return d


@pytest.fixture(autouse=True)
def ray_never_starts(monkeypatch):
    """A case that slipped through must not start Ray (nor an experiment): ``ray.init`` fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called: the input was not refused before Ray started")

    monkeypatch.setattr(ray, "init", refuse)
    # as if no Ray ran in this process (the suite's session Ray may): a case that slipped through would start one
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def refused(argv: list[str], expected: str, files, capsys) -> str:
    """Run ``fedvsr argv``; assert exit code 2, one ``fedvsr: ...`` line naming ``expected``, no traceback, no
    output, no Ray. Returns the line."""
    argv = [a.replace("@D", str(files)) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedvsr: "), err
    assert "Traceback" not in err
    assert expected.replace("@D", str(files)) in lines[0]
    assert not ray.is_initialized()
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_invalid_configs_are_one_line_before_ray(argv, expected, files, capsys, tmp_path):
    has_out = "--out" in argv
    line = refused(
        ["simulate", *argv, *([] if has_out or "--resume" in argv else ["--out", str(tmp_path / "r")])],
        expected,
        files,
        capsys,
    )
    assert line.startswith("fedvsr: config error: ")
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_other_commands_refuse_in_one_line(argv, expected, files, capsys, tmp_path):
    if argv[0] == "train-central" and "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "c")]
    refused(argv, expected, files, capsys)


@pytest.mark.parametrize(("change", "extra", "expected"), [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_invalid_sweep_specs_are_one_line_before_ray(change, extra, expected, files, capsys, tmp_path):
    if isinstance(change, str):
        path = str(files / change) if change.endswith(".yaml") else change
    else:
        data = {**BASE_SPEC, **change}
        data = {k: v for k, v in data.items() if v is not None}
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
        path = str(tmp_path / "spec.yaml")
    out = [] if "--out" in extra else ["--out", str(tmp_path / "sweep-out")]
    refused(["sweep", path, *out, *extra], expected, files, capsys)
    assert not (tmp_path / "sweep-out").exists()


@pytest.mark.parametrize(
    ("argv", "expected"), [c[1:] for c in SWEEP_COMMAND_CASES], ids=[c[0] for c in SWEEP_COMMAND_CASES]
)
def test_invalid_sweep_commands_are_one_line_before_ray(argv, expected, files, capsys):
    refused(argv, expected, files, capsys)


def test_the_table_is_as_large_as_promised():
    """At least 100 invalid configs and 30 invalid sweep specs, each with its own id."""
    assert len(CONFIG_CASES) + len(OTHER_CASES) >= 100 and len(SPEC_CASES) >= 30
    for table in (CONFIG_CASES + OTHER_CASES, SPEC_CASES, SWEEP_COMMAND_CASES):
        assert len({c[0] for c in table}) == len(table)


# ----------------------------------------------------------------------- folders only root can make unwritable


def _mount_read_only(path) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("command", ["simulate", "sweep"])
def test_read_only_and_immutable_out_folders_are_refused(command, files, capsys, tmp_path):
    """A read-only file system and an immutable folder (chattr +i): both need root to make; skipped without."""
    ro, immutable = tmp_path / "ro", tmp_path / "immutable"
    if not _mount_read_only(ro):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    immutable.mkdir()
    try:
        if subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode != 0:
            pytest.skip("cannot set the immutable flag here (needs root and a file system that has it)")
        spec = files / "spec-ok.yaml"
        spec.write_text(yaml.safe_dump(BASE_SPEC))
        head = ["simulate"] if command == "simulate" else ["sweep", str(spec)]
        for out, why in (
            (ro, "is not writable: Read-only file system"),
            (ro / "run", "cannot be created: Read-only file system"),
            (immutable, "is not writable: Operation not permitted"),
            (immutable / "a" / "b", "cannot be created: Operation not permitted"),
        ):
            line = refused([*head, "--out", str(out)], why, files, capsys)
            assert f"--out {str(out)!r}" in line
        assert list(immutable.iterdir()) == []  # the probes left nothing
    finally:
        subprocess.run(["chattr", "-i", str(immutable)], capture_output=True)
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_a_folder_without_write_permission_is_refused(files, capsys, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a folder whatever its permissions")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    refused(["simulate", "--out", str(locked)], "is not writable: Permission denied", files, capsys)
    refused(["simulate", "--out", str(locked / "run")], "cannot be created: Permission denied", files, capsys)
