"""Sweep specifications: search spaces kept as data (YAML files), validated before Ray starts.

A spec file (the shipped ones are in ``fedvsr/sweeps/spaces/``; ``fedvsr sweep --list`` shows them)::

    description: FedProx's mu grid {0.001, 0.01, 0.1, 1} (the FedVSR paper, arXiv:2503.13745, Sec. 5.2)
    metric: psnr            # psnr | ssim | loss: the global model's value after a trial's last round
    search: grid            # grid: every point once; optuna: Optuna's TPE proposes `trials` points (seeded)
    trials: 16              # optuna only
    scheduler: asha         # asha (stops bad trials early on the round axis) | none
    asha: {grace_period: 2, reduction_factor: 3}
    replicates: 3           # training seeds per point (seed, seed + 1, ...; data.seed fixed, or vary_data: true);
                            # ASHA's rungs and Optuna see the mean over a point's replicates
    fixed:                  # config keys every trial shares (`--set` adds to and overrides them)
      fl.strategy: fedprox
      fl.rounds: 20
    params:                 # swept keys, in order
      fl.mu: {grid: [0.001, 0.01, 0.1, 1]}

A parameter is one config key (dotted, as in ``--set``) with exactly one of

* ``uniform: [low, high]``, ``loguniform: [low, high]`` (optuna only);
* ``int: [low, high]`` with optional ``step`` and ``log: true`` (optuna only);
* ``choice: [v, ...]`` or ``grid: [v, ...]`` (the same: categorical for optuna, every value for grid);
* ``affine: KEY`` with ``scale`` and ``offset``: derived, ``scale * value(KEY) + offset`` (the "bounded"
  lambdas: ``fl.lambda_vsr: {affine: fl.lambda_hifr, scale: -1, offset: 1}``);
* ``value: v``: a constant, useful with ``when``.

``when: {KEY: value or [values]}`` makes a parameter conditional: it is set only in trials where each
named key (fixed, or a parameter listed earlier) has one of those values (``fl.mu`` only with
``fedprox``). A joint parameter sets several keys at once from a list of tuples, so only valid
combinations are drawn (FCA2's (S, O) pairs)::

    group_overlap: {keys: [model.options.group_size, model.options.overlap], choice: [[9, 3], [12, 4]]}

Everything a spec can get wrong (an unknown key, a value or range the key does not allow, a
continuous distribution in a grid, a condition on a key that is neither fixed nor swept earlier, a
grid point that is not a valid experiment) raises :class:`SpecError` (a ConfigError) here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedvsr.config import (
    MAX_REPLICATES,
    SEED_MAX,
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    read_yaml_file,
    set_dotted,
)
from fedvsr.sweeps.params import (  # noqa: F401  (Param, SpecError and the kinds are part of this module's API)
    CATEGORICAL,
    CONTINUOUS,
    DERIVED,
    KINDS,
    Param,
    SpecError,
    _check,
    _derived,
    _exclusive,
    _fmt,
    _fmt_point,
    _label,
    _matches,
    _param,
)

SPACES_DIR = Path(__file__).parent / "spaces"
METRICS = {"psnr": "max", "ssim": "max", "loss": "min"}
SEARCHES = ("grid", "optuna")
SCHEDULERS = ("asha", "none")
_TOP_KEYS = {
    "description",
    "metric",
    "search",
    "trials",
    "scheduler",
    "asha",
    "fixed",
    "params",
    "seed",
    "replicates",
    "vary_data",
}
_ASHA_KEYS = {"grace_period", "reduction_factor"}
#: the largest searcher seed: Optuna's TPESampler seeds numpy's RandomState, which takes 0 .. 2^32 - 1
SEARCH_SEED_MAX = 2**32 - 1
#: the most trials of an Optuna search (each is a whole experiment)
MAX_TRIALS = 100000


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: base config values, swept parameters, search, scheduler and metric."""

    name: str
    description: str
    metric: str
    mode: str
    search: str
    trials: int
    scheduler: str
    grace_period: int
    reduction_factor: int
    seed: int
    fixed: dict[str, Any] = field(default_factory=dict)  #: dotted key -> value, incl. --set overrides
    params: tuple[Param, ...] = ()
    #: training seeds per point (seed, seed + 1, ...; fedvsr.platform.replicates): ASHA and Optuna see their mean
    replicates: int = 1
    vary_data: bool = False  #: replicates vary data.seed too

    # ------------------------------------------------------------------ the experiment side
    def base_tree(self) -> dict[str, Any]:
        """The nested config tree of the fixed keys."""
        tree: dict[str, Any] = {}
        for key, value in self.fixed.items():
            set_dotted(tree, key, value)
        return tree

    def experiment_config(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """The validated config of one trial: defaults, fixed keys, then the trial's own values."""
        tree = self.base_tree()
        for key, value in overrides.items():
            set_dotted(tree, key, value)
        return config_from_dict(tree)

    @property
    def max_rounds(self) -> int:
        """The most rounds any trial runs (ASHA's max_t)."""
        rounds = [p for p in self.params if "fl.rounds" in p.keys]
        if not rounds:
            return int(self.fixed.get("fl.rounds", ExperimentConfig().fl.rounds))
        highs = []
        for p in rounds:
            i = p.keys.index("fl.rounds")
            highs += [p.high] if p.kind == "int" else [v[i] if p.joint else v for v in p.values]
        return int(max(highs))

    def swept_keys(self) -> list[str]:
        """Every config key a parameter sets, in spec order."""
        return [k for p in self.params for k in p.keys]

    # ------------------------------------------------------------------ grid search
    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid (conditional parameters expand only where they apply), in spec order."""
        points: list[dict[str, Any]] = [{}]
        for p in self.params:
            nxt = []
            for point in points:
                context = {**self.fixed, **point}
                if not p.applies(context):
                    nxt.append(point)
                elif p.kind in CATEGORICAL:
                    nxt += [{**point, **p.assign(v)} for v in p.values]
                else:
                    nxt.append({**point, **p.assign(_derived(p, context))})
            points = nxt
        return points

    # ------------------------------------------------------------------ Optuna (define-by-run)
    def suggest(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: draw every applicable parameter from ``trial`` (an ``optuna.Trial``).

        Returns the config values Optuna does not record as they are: categorical values (Optuna holds
        their string labels) and derived values."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for p in self.params:
            context = {**self.fixed, **values}
            if not p.applies(context):
                continue
            if p.kind == "uniform":
                v = trial.suggest_float(p.name, p.low, p.high)
            elif p.kind == "loguniform":
                v = trial.suggest_float(p.name, p.low, p.high, log=True)
            elif p.kind == "int":
                v = trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step or 1, log=p.log)
            elif p.kind in CATEGORICAL:  # Optuna holds the values' labels; the config gets the values
                labels = [_label(v) for v in p.values]
                v = p.values[labels.index(trial.suggest_categorical(p.name, labels))]
                extra.update(p.assign(v))
            else:
                v = _derived(p, context)
                extra.update(p.assign(v))
            values.update(p.assign(v))
        return extra

    def trial_overrides(self, tune_config: dict[str, Any]) -> dict[str, Any]:
        """The config keys of a trial from the config Tune hands it (grid: ``{"params": {...}}``; optuna:
        the values :meth:`suggest` drew), without the labels of joint parameters."""
        flat = tune_config.get("params", tune_config)
        joint_labels = {p.name for p in self.params if p.joint}
        return {k: v for k, v in flat.items() if k not in joint_labels}

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec, as written to ``sweep.yaml`` (loadable by :func:`load_spec`)."""
        params = {}
        for p in self.params:
            d: dict[str, Any] = {}
            if p.joint:
                d["keys"] = list(p.keys)
            if p.kind in CONTINUOUS:
                d[p.kind] = [p.low, p.high]
                if p.step:
                    d["step"] = p.step
                if p.kind == "int" and p.log:
                    d["log"] = True
            elif p.kind in CATEGORICAL:
                d[p.kind] = [list(v) if isinstance(v, tuple) else v for v in p.values]
            elif p.kind == "affine":
                d.update(affine=p.source, scale=p.scale, offset=p.offset)
            else:
                d["value"] = p.values[0]
            if p.when:
                d["when"] = {k: list(v) if len(v) > 1 else v[0] for k, v in p.when}
            params[p.name] = d
        return {
            "description": self.description,
            "metric": self.metric,
            "search": self.search,
            "trials": self.trials,
            "scheduler": self.scheduler,
            "asha": {"grace_period": self.grace_period, "reduction_factor": self.reduction_factor},
            "seed": self.seed,
            "replicates": self.replicates,
            "vary_data": self.vary_data,
            "fixed": dict(self.fixed),
            "params": params,
        }


# ----------------------------------------------------------------------------------------- loading


def list_specs() -> list[tuple[str, str]]:
    """(name, description) of every shipped spec."""
    out = []
    for path in sorted(SPACES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        out.append((path.stem, str(data.get("description", "")).strip()))
    return out


def spec_path(name_or_path: str | Path) -> Path:
    """A shipped spec's file by name, or the given YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path  # read_yaml_file says what is wrong with it
    shipped = SPACES_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        names = ", ".join(n for n, _ in list_specs())
        raise SpecError(
            f"unknown sweep spec {str(name_or_path)!r}: neither a YAML file nor a shipped spec; shipped: {names}"
        )
    return shipped


def load_spec(
    name_or_path: str | Path,
    overrides: list[str] | None = None,
    trials: int | None = None,
    seed: int | None = None,
    replicates: int | None = None,
) -> SweepSpec:
    """Read and validate a spec; ``overrides`` (``key=value``, as ``--set``) add to its fixed keys."""
    from fedvsr.config import parse_override

    path = spec_path(name_or_path)
    try:
        data = read_yaml_file(path, "sweep spec file")
    except ConfigError as err:
        raise SpecError(str(err)) from None
    if not isinstance(data, dict):
        raise SpecError(
            f"sweep spec {str(path)!r} must hold a mapping at the top level, not "
            f"{'nothing' if data is None else 'a ' + type(data).__name__}"
        )
    data = copy.deepcopy(data)
    for text in overrides or []:
        key, value = parse_override(text)
        data.setdefault("fixed", {})
        if not isinstance(data["fixed"], dict):
            raise SpecError(f"{path.stem}: 'fixed' must be a mapping of config keys to values")
        data["fixed"][key] = value
    if trials is not None:
        if data.get("search", "optuna") == "grid":
            raise SpecError(
                f"--trials = {trials}: sweep spec {path.stem!r} is a grid (search: grid), which runs each "
                "of its points once; drop --trials, or use a spec with search: optuna"
            )
        data["trials"] = trials
    if seed is not None:
        data["seed"] = seed
    if replicates is not None:
        data["replicates"] = replicates
    return build_spec(path.stem, data, cli_keys={parse_override(t)[0] for t in overrides or []})


def build_spec(name: str, data: dict[str, Any], cli_keys: set[str] | None = None) -> SweepSpec:
    """Validate a spec mapping (see the module docstring) into a :class:`SweepSpec`."""

    def err(msg: str) -> SpecError:
        return SpecError(f"sweep spec {name!r}: {msg}")

    top = _top_level(data, err)
    fixed_raw = data.get("fixed") or {}
    if not isinstance(fixed_raw, dict):
        raise err("'fixed' must be a mapping of config keys (fl.rounds) to values")
    fixed = {str(key): _check(name, str(key), value) for key, value in fixed_raw.items()}
    params = _params(name, data.get("params") or {}, fixed, fixed_raw, cli_keys, err)
    search = top["search"]
    if search == "grid":
        bad = [p.name for p in params if p.kind in CONTINUOUS]
        if bad:
            raise err(
                f"search = 'grid' needs listed values, but {bad[0]!r} has a continuous distribution; "
                "use choice/grid values, or search: optuna"
            )
    trials = data.get("trials")
    if search == "optuna":
        if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
            raise err(
                f"trials = {trials!r}: search = 'optuna' needs trials, an integer >= 1 and <= {MAX_TRIALS} "
                f"(or --trials N)"
            )
    asha = top.pop("asha")
    spec = SweepSpec(
        name=name,
        description=str(data.get("description", "")).strip(),
        mode=METRICS[top["metric"]],
        trials=int(trials or 0),
        grace_period=0,
        reduction_factor=0,
        fixed=fixed,
        params=tuple(params),
        **top,
    )
    spec = _with_asha(spec, asha, err)
    _validate_experiments(spec, err)
    _check_replicate_seeds(spec, err)
    if search == "grid":
        points = len(spec.grid_points())
        # sweep.yaml records the grid's size as trials: that one value is allowed, any other was a mistake
        if trials is not None and (isinstance(trials, bool) or trials != points):
            raise err(
                f"trials = {trials!r} is not allowed with search = 'grid', which runs each of its {points} "
                f"points once; remove trials, or use search: optuna"
            )
        object.__setattr__(spec, "trials", points)
    return spec


def _top_level(data: dict[str, Any], err) -> dict[str, Any]:
    """The spec's top-level settings: metric, search, scheduler, asha, seed, replicates, vary_data."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise err(
            f"unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}; allowed: " + ", ".join(sorted(_TOP_KEYS))
        )
    metric = data.get("metric", "psnr")
    if metric not in METRICS:
        raise err(f"metric = {metric!r} is not allowed; expected one of {', '.join(METRICS)}")
    search = data.get("search", "optuna")
    if search not in SEARCHES:
        raise err(f"search = {search!r} is not allowed; expected one of {', '.join(SEARCHES)}")
    scheduler = data.get("scheduler", "asha")
    if scheduler not in SCHEDULERS:
        raise err(f"scheduler = {scheduler!r} is not allowed; expected one of {', '.join(SCHEDULERS)}")
    asha = data.get("asha") or {}
    if not isinstance(asha, dict) or set(asha) - _ASHA_KEYS:
        raise err(f"asha = {asha!r}: expected a mapping with keys {', '.join(sorted(_ASHA_KEYS))}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEARCH_SEED_MAX:
        raise err(
            f"seed = {seed!r} is not allowed; expected an integer >= 0 and <= {SEARCH_SEED_MAX} (the searcher's "
            f"seed: Optuna's sampler takes 32 bits)"
        )
    replicates = data.get("replicates", 1)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or not 1 <= replicates <= MAX_REPLICATES:
        raise err(
            f"replicates = {replicates!r} is not allowed; expected an integer >= 1 and <= {MAX_REPLICATES} "
            f"(training seeds per point)"
        )
    vary_data = data.get("vary_data", False)
    if not isinstance(vary_data, bool):
        raise err(f"vary_data = {vary_data!r} is not allowed; expected true or false")
    if vary_data and replicates < 2:
        raise err("vary_data = true needs replicates >= 2 (it varies data.seed across a point's replicates)")
    return {
        "metric": metric,
        "search": search,
        "scheduler": scheduler,
        "asha": asha,
        "seed": seed,
        "replicates": replicates,
        "vary_data": vary_data,
    }


def _params(
    name: str, params_raw: Any, fixed: dict[str, Any], fixed_raw: dict, cli_keys: set[str] | None, err
) -> list[Param]:
    """The spec's swept parameters, in order, and the keys they set against one another, --set and fixed."""
    if not isinstance(params_raw, dict) or not params_raw:
        raise err("'params' must be a non-empty mapping of swept config keys to distributions")
    params: list[Param] = []
    for pname, body in params_raw.items():
        params.append(_param(name, str(pname), body, fixed, params))
    swept = [k for p in params for k in p.keys]
    dupes = {k for k in swept if swept.count(k) > 1 and not _exclusive(params, k)}
    if dupes:
        raise err(f"key(s) {', '.join(sorted(dupes))} set by more than one parameter that can apply together")
    clash = sorted(set(swept) & set(cli_keys or ()))
    if clash:
        raise err(f"--set {clash[0]}=... names a key the spec sweeps; drop it from --set or from the spec's params")
    clash = sorted(set(swept) & set(fixed_raw))
    if clash:
        raise err(f"{clash[0]!r} is both fixed and swept; keep it in one place")
    return params


def _check_replicate_seeds(spec: SweepSpec, err) -> None:
    """A point's replicate r runs seed + r (and data.seed + r with vary_data): the last must still be a seed."""
    base = spec.experiment_config({})
    for key, seed in (("seed", base.seed), *((("data.seed", base.data.seed),) if spec.vary_data else ())):
        if seed + spec.replicates - 1 > SEED_MAX:
            raise err(
                f"{key} = {seed} with replicates = {spec.replicates} gives replicate seeds above {SEED_MAX} "
                f"(2^63 - 1); allowed: {key} <= {SEED_MAX - spec.replicates + 1}"
            )


def _with_asha(spec: SweepSpec, asha: dict, err) -> SweepSpec:
    max_t = spec.max_rounds
    grace = asha.get("grace_period", max(1, max_t // 10))
    factor = asha.get("reduction_factor", 3)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 1 <= grace <= max_t:
        raise err(f"asha.grace_period = {grace!r} is not allowed; expected an integer in [1, {max_t}] (the rounds)")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise err(f"asha.reduction_factor = {factor!r} is not allowed; expected an integer >= 2")
    object.__setattr__(spec, "grace_period", grace)
    object.__setattr__(spec, "reduction_factor", factor)
    return spec


def _validate_experiments(spec: SweepSpec, err) -> None:
    """Every grid point (or, for Optuna, each categorical value and both ends of each range, with the
    conditions that make it apply) must give a valid experiment config."""
    try:
        spec.experiment_config({})
    except ConfigError as e:
        raise err(f"the fixed keys do not make a valid experiment: {e}") from None
    if spec.search == "grid":
        for point in spec.grid_points():
            try:
                spec.experiment_config(point)
            except ConfigError as e:
                raise err(f"grid point {_fmt_point(point)} is not a valid experiment: {e}") from None
        return
    for p in spec.params:
        context = _context_for(spec, p)
        if p.kind in CATEGORICAL:
            candidates = list(p.values)
        elif p.kind in CONTINUOUS:
            candidates = [int(p.low), int(p.high)] if p.kind == "int" else [p.low, p.high]
        else:
            continue
        for v in candidates:
            point = {**context, **p.assign(v)}
            try:
                spec.experiment_config(point)
            except ConfigError as e:
                raise err(
                    f"{p.name} = {_fmt(v)} (with {_fmt_point(context) or 'the fixed keys'}) is not a valid "
                    f"experiment: {e}"
                ) from None


def _context_for(spec: SweepSpec, target: Param) -> dict[str, Any]:
    """Values of earlier parameters under which ``target``'s conditions hold (first matching values)."""
    needed = dict(target.when)
    context: dict[str, Any] = {}
    for p in spec.params:
        if p is target:
            break
        if not p.applies({**spec.fixed, **context}):
            continue
        if p.kind in CATEGORICAL:
            choice = p.values[0]
            for v in p.values:
                assigned = p.assign(v)
                if all(_matches(assigned[k], needed[k]) for k in assigned if k in needed):
                    choice = v
                    break
            context.update(p.assign(choice))
        elif p.kind in CONTINUOUS:
            context.update(p.assign(int(p.low) if p.kind == "int" else p.low))
        else:
            context.update(p.assign(_derived(p, {**spec.fixed, **context})))
    return context
