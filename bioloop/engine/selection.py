"""Best-model selection (key metric plus a monitor list) and early stopping."""

from __future__ import annotations

import math
from typing import Any

from bioloop.errors import ConfigError


class Selection:
    """Tracks the best value of each watched metric and the early-stopping counter."""

    def __init__(self, cfg, task):
        self.key = cfg.key_metric or task.default_key_metric
        self.modes = {self.key: cfg.key_metric_mode or _mode(task, self.key)}
        for metric in cfg.monitor:
            self.modes.setdefault(metric, _mode(task, metric))
        self.best: dict[str, dict[str, Any]] = {}
        es = cfg.early_stopping
        self.es = es
        self.es_metric = (es.metric or self.key) if es else None
        self.es_mode = (es.mode or self.modes.get(self.es_metric) or _mode(task, self.es_metric)) if es else None
        self.es_best: float | None = None
        self.es_bad = 0
        self.early_stop_reason = ""
        self.where = cfg.source.name if cfg.source else "config"
        self._checked = False

    def _check_names(self, metrics: dict[str, float]) -> None:
        if self._checked or not metrics:
            return
        self._checked = True
        from bioloop.config.structure import did_you_mean

        watched = {self.key: "key_metric", **{m: "monitor" for m in self.modes if m != self.key}}
        if self.es_metric and self.es_metric not in watched:
            watched[self.es_metric] = "early_stopping.metric"
        problems = [f"{self.where}: {setting}: metric '{m}' is not reported by validation{did_you_mean(m, metrics)}; "
                    f"choose from: {', '.join(sorted(metrics))}" for m, setting in watched.items() if m not in metrics]
        if problems:
            raise ConfigError.many(problems)

    def update(self, metrics: dict[str, float], *, epoch: int) -> list[str]:
        """Record a validation; return the metrics that improved (their best checkpoints are due)."""
        self._check_names(metrics)
        improved = []
        for metric, mode in self.modes.items():
            value = metrics.get(metric)
            if value is None or not math.isfinite(value):
                continue
            old = self.best.get(metric)
            if old is None or _better(value, old["value"], mode, 0.0):
                self.best[metric] = {"value": float(value), "epoch": epoch, "mode": mode}
                improved.append(metric)
        if self.es is not None and self.es_metric in metrics:
            value = metrics[self.es_metric]
            if math.isfinite(value) and (self.es_best is None or _better(value, self.es_best, self.es_mode, self.es.min_delta)):
                self.es_best = float(value)
                self.es_bad = 0
            else:
                self.es_bad += 1
        return improved

    def should_stop(self, *, epoch: int) -> bool:
        if self.es is None or epoch < self.es.min_epochs or self.es_bad < self.es.patience:
            return False
        self.early_stop_reason = (
            f"{self.es_metric} did not improve by more than {self.es.min_delta} for {self.es_bad} validations "
            f"(best {self.es_best})"
        )
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "es_best": self.es_best, "es_bad": self.es_bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = {k: dict(v) for k, v in (state.get("best") or {}).items()}
        self.es_best = state.get("es_best")
        self.es_bad = int(state.get("es_bad", 0))


def _mode(task, metric: str) -> str:
    return task.metric_mode(metric)


def _better(new: float, old: float, mode: str, min_delta: float) -> bool:
    return new > old + min_delta if mode == "max" else new < old - min_delta
