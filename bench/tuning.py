"""Hyperparameter search for NoProp-DT: the search space, the objectives and the trial objective.

The search space is a YAML file (configs/search_space.yaml) whose `params` map config keys
(the dotted keys of bench/config.py) to a range or a list of choices:

    params:
      noprop.schedule.family: {choices: [cosine, linear_logsnr, sigmoid]}
      noprop.schedule.s: {low: 1.0e-4, high: 0.2, log: true, when: {noprop.schedule.family: cosine}}
      noprop.eta: {low: 1.0e-3, high: 1.0, log: true}

The whole file is checked before any trial (`load_space` raises SearchSpaceError naming the key):
unknown config keys, keys the tuner sets itself, empty or reversed ranges, log ranges that reach 0,
and bounds or choices that the config itself would refuse (an unknown schedule family, alpha_min >= 1).

Each trial samples the space, sets the values on the base config and validates the result exactly as
training does (`config.validate`, which builds the schedule with `make_schedule`). A combination that
fails — e.g. ends that cross (alpha_min above the cap snr_max/(1+snr_max)), so SNR would decrease along
the chain — is *rejected*: the trial ends PRUNED with the reason in its user attribute
`rejected_reason` and is never trained. PRUNED (not FAIL) keeps the sampler informed: TPE ranks pruned
trials as bad and steers away from the invalid region, while it ignores FAILed trials entirely.
"""
from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import config as config_lib

# Keys the tuner itself sets (dataset, method, budget, hardware, seeds, data split): never searched.
RESERVED_PREFIXES = ("dataset", "methods", "seed", "seeds", "device", "precision", "compile", "data.", "quick.",
                     "train.epochs", "train.eval_batch_size")
SPEC_FIELDS = {"low", "high", "log", "step", "choices", "type", "when"}
TOP_LEVEL_FIELDS = {"params", "description"}

# User attribute `outcome` of a trial: complete | pruned | rejected | failed.
OUTCOME_REJECTED = "rejected"
OUTCOME_PRUNED = "pruned"
OUTCOME_FAILED = "failed"
OUTCOME_COMPLETE = "complete"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 (no dot) as a float, as YAML 1.2 and researchers do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class SearchSpaceError(ValueError):
    """An invalid search-space file; the message names the file and the key."""


class ObjectiveError(ValueError):
    """An invalid --objective value."""


# ----------------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Param:
    """One searched config key."""

    key: str
    kind: str  # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # sample only if these params took these values

    def active(self, sampled: dict[str, Any]) -> bool:
        return all(sampled.get(key, _MISSING) in values for key, values in self.when.items())

    def describe(self) -> str:
        if self.kind == "categorical":
            text = f"one of {list(self.choices)}"
        else:
            text = f"{self.kind} in [{self.low}, {self.high}]" + (" (log scale)" if self.log else "")
            if self.step is not None:
                text += f" step {self.step}"
        if self.when:
            text += " when " + ", ".join(f"{k} in {list(v)}" for k, v in self.when.items())
        return text


_MISSING = object()


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str  # file path, for messages
    text: str  # the YAML as written, logged with the study

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]


def _err(source: str, key: str | None, message: str) -> SearchSpaceError:
    where = f"search space {source}" + (f", '{key}'" if key else "")
    return SearchSpaceError(f"{where}: {message}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_value(source: str, key: str, what: str, value: Any) -> None:
    """The value must be one the config itself accepts for this key."""
    check, expected = config_lib.RULES[key]
    if not check(value):
        raise _err(source, key, f"{what} {value!r} is not a valid value for this key (expected {expected})")


def _parse_param(source: str, key: str, spec: Any, earlier: dict[str, Param]) -> Param:
    if not isinstance(key, str) or key not in config_lib.RULES:
        known = ", ".join(k for k in config_lib.RULES if not _reserved(k))
        raise _err(source, str(key), f"unknown config key (searchable keys: {known})")
    if _reserved(key):
        raise _err(source, key, "is set by runners.tune itself (dataset, method, budget, data split, hardware, "
                                "seed) and cannot be searched; use the CLI flags or --set")
    if not isinstance(spec, dict):
        raise _err(source, key, "must be a mapping with low/high or choices")
    unknown = set(spec) - SPEC_FIELDS
    if unknown:
        raise _err(source, key, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(SPEC_FIELDS)}")

    when: dict[str, tuple[Any, ...]] = {}
    raw_when = spec.get("when", {})
    if not isinstance(raw_when, dict):
        raise _err(source, key, "'when' must map an earlier categorical parameter to a value or list of values")
    for cond_key, cond_values in raw_when.items():
        parent = earlier.get(cond_key)
        if parent is None or parent.kind != "categorical":
            raise _err(source, key, f"'when' refers to {cond_key!r}, which is not a categorical parameter "
                                    "listed before it")
        values = tuple(cond_values) if isinstance(cond_values, list) else (cond_values,)
        bad = [v for v in values if v not in parent.choices]
        if not values or bad:
            raise _err(source, key, f"'when' value(s) {bad or list(values)} are not among the choices "
                                    f"{list(parent.choices)} of {cond_key!r}")
        when[cond_key] = values

    if "choices" in spec:
        extra = {"low", "high", "log", "step"} & set(spec)
        if extra:
            raise _err(source, key, f"give either choices or low/high, not both (also has {sorted(extra)})")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise _err(source, key, "choices must be a non-empty list (an empty list is an empty search range)")
        if len({repr(c) for c in choices}) != len(choices):
            raise _err(source, key, f"choices {choices} contain duplicates")
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool)) and choice is not None:
                raise _err(source, key, f"choice {choice!r} must be a string, number, boolean or null")
            _check_value(source, key, "choice", choice)
        return Param(key, "categorical", choices=tuple(choices), when=when)

    if "low" not in spec or "high" not in spec:
        raise _err(source, key, "needs either 'choices' or both 'low' and 'high'")
    low, high = spec["low"], spec["high"]
    if not _is_number(low) or not _is_number(high):
        raise _err(source, key, f"low and high must be finite numbers, got low={low!r}, high={high!r}")
    kind = spec.get("type")
    if kind is None:  # the type of the config's default value; a null default needs an explicit type
        default = config_lib.flatten(config_lib.DEFAULTS).get(key)
        if default is None:
            raise _err(source, key, "the config default is null, so give 'type: int' or 'type: float'")
        kind = "int" if isinstance(default, int) and not isinstance(default, bool) else "float"
    if kind not in ("int", "float"):
        raise _err(source, key, f"type must be int or float, got {kind!r}")
    if kind == "int" and (int(low) != low or int(high) != high):
        raise _err(source, key, f"an int range needs integer bounds, got low={low!r}, high={high!r}")
    if low > high:
        raise _err(source, key, f"low {low} is greater than high {high}")
    if low == high:
        raise _err(source, key, f"the range [{low}, {high}] is empty (low == high); fix the value with "
                                f"--set {key}={low} instead of searching it")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _err(source, key, f"log must be true or false, got {log!r}")
    if log and low <= 0:
        raise _err(source, key, f"a log-scale range needs low > 0, got low={low}")
    step = spec.get("step")
    if step is not None:
        if log:
            raise _err(source, key, "step cannot be combined with log: true")
        if not _is_number(step) or step <= 0 or (kind == "int" and int(step) != step):
            raise _err(source, key, f"step must be a positive {kind}, got {step!r}")
    if kind == "int":
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    else:
        low, high = float(low), float(high)
    _check_value(source, key, "low", low)
    _check_value(source, key, "high", high)
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _reserved(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESERVED_PREFIXES)


def parse_space(text: str, source: str = "<string>") -> SearchSpace:
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"search space {source} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"search space {source} must hold a mapping with a 'params' section")
    unknown = set(raw) - TOP_LEVEL_FIELDS
    if unknown:
        raise SearchSpaceError(f"search space {source}: unknown top-level key(s) {sorted(unknown)}; "
                               f"allowed: {sorted(TOP_LEVEL_FIELDS)}")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SearchSpaceError(f"search space {source}: 'params' must be a non-empty mapping of config keys")
    params: dict[str, Param] = {}
    for key, spec in params_raw.items():
        params[key] = _parse_param(source, key, spec, params)
    return SearchSpace(tuple(params.values()), source, text)


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"search space file not found: {path}")
    return parse_space(path.read_text(), str(path))


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Sample the active parameters of the space on an Optuna trial; names are the config keys."""
    sampled: dict[str, Any] = {}
    for p in space.params:
        if not p.active(sampled):
            continue
        if p.kind == "categorical":
            sampled[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            sampled[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        elif p.step is not None:
            sampled[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step)
        else:
            sampled[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log)
    return sampled


def apply_params(base_cfg: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The base config with the sampled values set, validated like any training config.

    Raises config.ConfigError (with the reason) when the combination is invalid.
    """
    cfg = copy.deepcopy(base_cfg)
    for key, value in params.items():
        config_lib.set_path(cfg, key, value)
    config_lib.validate(cfg)
    return cfg


def invalid_fraction(space: SearchSpace, base_cfg: dict[str, Any], samples: int = 300,
                     seed: int = 0) -> tuple[float, str | None]:
    """Share of random draws from the space that would be rejected, and one example reason.

    A dry run with Optuna's RandomSampler in memory; no trial is created in any real storage.
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        bad, example = 0, None
        for _ in range(samples):
            trial = study.ask()
            try:
                apply_params(base_cfg, suggest(trial, space))
            except config_lib.ConfigError as err:
                bad += 1
                example = example or str(err)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return bad / samples, example


def check_space_against(space: SearchSpace, base_cfg: dict[str, Any]) -> float:
    """Refuse a space in which no combination is valid for this base config; return the invalid share."""
    fraction, example = invalid_fraction(space, base_cfg)
    if fraction >= 1.0:
        raise SearchSpaceError(f"search space {space.source}: every one of 300 random combinations is invalid "
                               f"for this base config, e.g. {example}")
    return fraction


# ----------------------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Objective:
    name: str  # as given on the command line
    metric: str  # key in MethodResult.metrics
    direction: str  # "maximize" | "minimize"
    accuracy: bool
    help: str


OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (
        Objective("val_acc", "final_val_acc", "maximize", True,
                  "validation accuracy after the last epoch (the model you would keep)"),
        Objective("best_val_acc", "best_val_acc", "maximize", True, "best per-epoch validation accuracy"),
        Objective("train_time", "train_time_s", "minimize", False, "training wall-clock seconds (no eval)"),
        Objective("peak_memory", "peak_mem_train_mb", "minimize", False,
                  "peak training memory in MB (CUDA allocator, or process peak RSS on CPU)"),
        Objective("counted_memory", "train_counted_peak_mb", "minimize", False,
                  "counted training peak in MB: params + grads + optimizer state + saved activations"),
    )
}


def parse_objectives(text: str) -> list[Objective]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ObjectiveError("--objective is empty")
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ObjectiveError(f"unknown objective(s) {unknown}; choose from {', '.join(OBJECTIVES)} "
                             "(comma-separated for multi-objective, e.g. val_acc,train_time)")
    if len(set(names)) != len(names):
        raise ObjectiveError(f"--objective {text!r} names an objective twice")
    objectives = [OBJECTIVES[n] for n in names]
    if not any(o.accuracy for o in objectives):
        raise ObjectiveError(f"--objective {text!r} needs an accuracy objective (val_acc or best_val_acc), "
                             "which picks the best configuration")
    return objectives


def accuracy_index(objectives: list[Objective]) -> int:
    return next(i for i, o in enumerate(objectives) if o.accuracy)


# ----------------------------------------------------------------------------------------- the objective
@dataclass
class TrialSetup:
    """Everything a trial needs besides its sampled parameters; shared read-only by worker threads."""

    space: SearchSpace
    base_cfg: dict[str, Any]  # resolved config of every trial before its parameters are set
    objectives: list[Objective]
    method: str
    data: Any  # bench.data.DataSplits
    device: Any
    precision: str
    seed: int
    experiment_id: str
    parent_run_id: str
    study_name: str
    prune: bool
    code_fingerprint: str = ""


class TrialObjective:
    """Callable for study.optimize: sample → validate (reject) → train with run_method → objective values.

    The test set is never evaluated. Per epoch the validation accuracy is reported to the pruner
    (single-objective studies only; Optuna has no pruning for several objectives).
    """

    KEPT_METRICS = ("final_val_acc", "best_val_acc", "best_epoch", "train_time_s", "peak_mem_train_mb",
                    "train_counted_peak_mb", "images_per_s", "val_eval_time_s")

    def __init__(self, setup: TrialSetup, run_method: Callable[..., Any] | None = None):
        self.setup = setup
        if run_method is None:
            from bench.training import run_method as run_method  # heavy import, only when training
        self.run_method = run_method

    def __call__(self, trial: Any) -> float | list[float]:
        import optuna

        s = self.setup
        params = suggest(trial, s.space)
        if s.code_fingerprint:
            trial.set_user_attr("code_fingerprint", s.code_fingerprint)
        try:
            cfg = apply_params(s.base_cfg, params)
        except config_lib.ConfigError as err:
            reason = str(err)
            trial.set_user_attr("outcome", OUTCOME_REJECTED)
            trial.set_user_attr("rejected_reason", reason)
            log_rejected_run(s, trial.number, params, reason)
            raise optuna.TrialPruned(f"rejected, not trained: {reason}") from None

        epochs = cfg["train"]["epochs"]

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if epoch == 1:
                import mlflow

                active = mlflow.active_run()
                if active is not None:
                    trial.set_user_attr("mlflow_run_id", active.info.run_id)
            if not s.prune:
                return
            trial.report(metrics["val_acc"], epoch)
            # Pruning after the last epoch would throw away a finished result.
            if epoch < epochs and trial.should_prune():
                trial.set_user_attr("outcome", OUTCOME_PRUNED)
                reason = f"pruned by MedianPruner after epoch {epoch}/{epochs}: val_acc {metrics['val_acc']:.4f}"
                trial.set_user_attr("pruned_reason", reason)
                raise optuna.TrialPruned(reason)

        from bench.engines import NonFiniteLoss

        tags = {"kind": "trial", "study_name": s.study_name, "trial_number": str(trial.number),
                "tuned_keys": ",".join(params), "code_fingerprint": s.code_fingerprint}
        try:
            result = self.run_method(s.method, cfg, s.data, s.device, s.precision, s.seed,
                                     experiment_id=s.experiment_id, parent_run_id=s.parent_run_id,
                                     run_name=f"trial-{trial.number}", evaluate_test=False,
                                     on_epoch=on_epoch, extra_tags=tags)
        except NonFiniteLoss as err:
            trial.set_user_attr("outcome", OUTCOME_FAILED)
            trial.set_user_attr("fail_reason", str(err))
            raise
        trial.set_user_attr("mlflow_run_id", result.run_id)
        trial.set_user_attr("outcome", OUTCOME_COMPLETE)
        for key in self.KEPT_METRICS:
            if key in result.metrics:
                trial.set_user_attr(key, float(result.metrics[key]))
        values = [float(result.metrics[o.metric]) for o in s.objectives]
        return values[0] if len(values) == 1 else values


def log_rejected_run(setup: TrialSetup, number: int, params: dict[str, Any], reason: str) -> None:
    """A rejected trial still gets its child run (KILLED, not trained) so MLflow lists every trial."""
    from mlflow import MlflowClient
    from mlflow.entities import Param as MlflowParam
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    client = MlflowClient()
    run = client.create_run(setup.experiment_id, run_name=f"trial-{number}", tags={
        MLFLOW_PARENT_RUN_ID: setup.parent_run_id, MLFLOW_RUN_NAME: f"trial-{number}", "kind": "trial",
        "method": setup.method, "study_name": setup.study_name, "trial_number": str(number),
        "tuned_keys": ",".join(params), "optuna_state": "PRUNED", "outcome": OUTCOME_REJECTED,
        "rejected_reason": reason[:5000],
    })
    client.log_batch(run.info.run_id, params=[MlflowParam(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "KILLED")
