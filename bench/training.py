"""Train and measure one method with one seed, logging everything to an MLflow child run.

Read top to bottom: build the model, then per epoch train → validate → log, then test once.
The test set is touched only after training, and never when `evaluate_test=False` (tuning).
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import torch
from tqdm.auto import tqdm

from bench import config as config_lib
from bench.data import DataSplits
from bench.engines import BackpropEngine, Engine, NoPropEngine
from bench.hardware import keep_freed_memory_mapped, synchronize
from bench.memory import DevicePeak
from bench.schedules import Schedule, make_schedule
from bench.tracking import tracked_run
from models.cnn import BackpropCNN
from models.encoders import count_params
from models.noprop import NoPropDT, class_prototypes

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class MethodResult:
    method: str
    seed: int
    run_id: str
    status: str  # FINISHED, FAILED or KILLED
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def schedule_from(cfg: dict[str, Any]) -> Schedule:
    return make_schedule(cfg["noprop"]["T"], cfg["noprop"]["eta"], **cfg["noprop"]["schedule"])


def build_model(method: str, cfg: dict[str, Any], data: DataSplits) -> torch.nn.Module:
    """The network of a method; the NoProp-DT variants and backprop-blocks share one architecture."""
    if method == "backprop_cnn":
        return BackpropCNN(data.in_channels, data.image_size, data.num_classes)
    np_cfg = cfg["noprop"]
    prototypes = None
    if np_cfg["embedding"] == "prototype":
        prototypes = class_prototypes(data.train_x.cpu(), data.train_y.cpu(), data.num_classes)
    return NoPropDT(
        data.in_channels, data.image_size, data.num_classes, schedule_from(cfg),
        embedding=np_cfg["embedding"], embed_dim=np_cfg["embed_dim"], prototypes=prototypes,
        decoder_hidden=np_cfg["decoder_hidden"] if method == "noprop_dt_decoder" else None,
        readout="last_block" if method == "backprop_blocks" else "head",
    )


def build_engine(method: str, model: torch.nn.Module, cfg: dict[str, Any], device: torch.device,
                 precision: str, seed: int, lean: bool = True) -> Engine:
    if device.type == "cpu":
        keep_freed_memory_mapped()
    engine_cls = NoPropEngine if method.startswith("noprop") else BackpropEngine
    engine = engine_cls(method, model, cfg, device, precision, seed, lean=lean)
    if cfg["compile"]:
        # NoProp-DT trains block by block, so each block is compiled; the baselines as a whole
        targets = engine.model.blocks if isinstance(engine, NoPropEngine) else [engine.model]
        for module in targets:
            module.compile()
    return engine


def parameter_counts(method: str, model: torch.nn.Module) -> dict[str, float]:
    counts = {"params_total": float(count_params(model))}
    if isinstance(model, NoPropDT):
        counts["params_per_block"] = float(count_params(model.blocks[0]))
        counts["params_block_image_branch"] = float(count_params(model.blocks[0].image))
    return counts


def log_schedule(model: NoPropDT) -> None:
    """Per block: its loss weight and SNR at both ends, visible in the MLflow UI without running anything."""
    snr = (model.alpha_bar / (1 - model.alpha_bar)).tolist()
    metrics = {}
    for t, w in enumerate(model.weights.tolist(), start=1):
        metrics[f"schedule/loss_weight/{t:02d}"] = w
        metrics[f"schedule/snr_start/{t:02d}"] = snr[t - 1]
        metrics[f"schedule/snr_end/{t:02d}"] = snr[t]
    mlflow.log_metrics(metrics, step=0)


def run_method(method: str, cfg: dict[str, Any], data: DataSplits, device: torch.device, precision: str,
               seed: int, *, experiment_id: str, parent_run_id: str | None, run_name: str | None = None,
               evaluate_test: bool = True, on_epoch: EpochCallback | None = None,
               extra_tags: dict[str, str] | None = None) -> MethodResult:
    """Train `method` for cfg.train.epochs and return its final metrics; the run records every epoch.

    Exceptions propagate after the run is marked FAILED (KILLED for Ctrl-C) with the epochs already
    logged kept; `on_epoch` may raise (e.g. optuna.TrialPruned) to stop early.
    """
    seed_everything(seed)
    model = build_model(method, cfg, data)
    engine = build_engine(method, model, cfg, device, precision, seed)
    epochs = cfg["train"]["epochs"]
    n_train = data.train_x.shape[0]
    tags = {"kind": "method", "method": method, "dataset": data.name, "seed": str(seed),
            "precision": precision, "device": device.type, **(extra_tags or {})}
    with tracked_run(experiment_id, run_name or f"{method}-seed{seed}", parent_run_id=parent_run_id,
                     tags=tags) as run:
        result = MethodResult(method, seed, run.info.run_id, "RUNNING")
        mlflow.log_params({**config_lib.flatten(cfg), "method": method, "run_seed": seed,
                           "resolved_precision": precision, "resolved_device": str(device)})
        mlflow.log_text(config_lib.dump(cfg), "config.yaml")
        result.metrics.update(parameter_counts(method, model))
        mlflow.log_metrics(result.metrics)
        if isinstance(model, NoPropDT):
            log_schedule(model)
        peak = DevicePeak(device)
        mlflow.set_tag("peak_mem_kind", peak.kind)
        train_time = eval_time = 0.0
        best_val, best_epoch, train_peak = -1.0, 0, 0.0
        epoch_bar = tqdm(range(1, epochs + 1), desc=f"{method} (seed {seed})", unit="epoch", dynamic_ncols=True)
        for epoch in epoch_bar:
            peak.reset()
            synchronize(device)
            start = time.perf_counter()
            train_metrics = engine.train_epoch(data.train_x, data.train_y, epoch, epochs)
            synchronize(device)
            epoch_time = time.perf_counter() - start
            train_time += epoch_time
            train_peak = max(train_peak, peak.peak_mb())

            start = time.perf_counter()
            val = engine.evaluate(data.val_x, data.val_y, diagnostics=True)
            synchronize(device)
            eval_time += time.perf_counter() - start
            if val["acc"] > best_val:
                best_val, best_epoch = val["acc"], epoch
            step_metrics = {**train_metrics, **{f"val_{k}": v for k, v in val.items()},
                            "epoch_time_s": epoch_time, "train_time_cum_s": train_time,
                            "train_images_per_s": n_train / epoch_time}
            mlflow.log_metrics(step_metrics, step=epoch)
            epoch_bar.set_postfix(val_acc=f"{val['acc']:.4f}", s_per_epoch=f"{epoch_time:.0f}")
            tqdm.write(f"[{method} seed {seed}] epoch {epoch}/{epochs}: val acc {val['acc']:.4f} "
                       f"({epoch_time:.1f} s, {n_train / epoch_time:.0f} img/s)")
            if on_epoch is not None:
                on_epoch(epoch, step_metrics)
        final = {
            "epochs_completed": float(epochs), "best_val_acc": best_val, "best_epoch": float(best_epoch),
            "final_val_acc": val["acc"], "train_time_s": train_time, "val_eval_time_s": eval_time,
            "images_per_s": n_train * epochs / train_time, "peak_mem_train_mb": train_peak,
            "train_counted_peak_mb": (engine.counted_peak_bytes or 0) / 2**20,
        }
        if evaluate_test:
            final.update(test_metrics(engine, data, peak, device))
        result.metrics.update(final)
        mlflow.log_metrics(final)
        result.status = "FINISHED"
    return result


def test_metrics(engine: Engine, data: DataSplits, peak: DevicePeak, device: torch.device) -> dict[str, float]:
    """Test accuracy with the inference wall-clock timed alone; diagnostics come after, untimed."""
    peak.reset()
    synchronize(device)
    start = time.perf_counter()
    headline = engine.evaluate(data.test_x, data.test_y, diagnostics=False)
    synchronize(device)
    eval_time = time.perf_counter() - start
    out = {"test_acc": headline["acc"], "eval_time_s": eval_time,
           "eval_images_per_s": data.test_x.shape[0] / eval_time, "peak_mem_eval_mb": peak.peak_mb()}
    diag = engine.evaluate(data.test_x, data.test_y, diagnostics=True)
    out.update({f"test_{k}": v for k, v in diag.items() if k != "acc"})
    return out
