"""Metrics of a run: one JSON object a line in ``metrics.jsonl``, and TensorBoard when installed.

Records: ``{"type": "train", "step", "epoch", "iter", "lr", "loss", <term>..., "img_per_s",
"time"}`` every ``train.log_every`` iterations (losses averaged over those iterations and
over ranks) and ``{"type": "eval", "step", "epoch", "metrics": {family: {...}}, "seconds",
"time"}`` after each evaluation. Only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

log = logging.getLogger("detkd")


class MetricLogger:
    """Appends records to ``metrics.jsonl`` in ``run_dir`` (a no-op when ``enabled`` is False)."""

    def __init__(self, run_dir: str, enabled: bool = True) -> None:
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.enabled = enabled
        self.writer = open_tensorboard(run_dir) if enabled else None

    def truncate_after(self, step: int) -> None:
        """Drop the records a killed run wrote after the checkpoint a resumed run starts from, and
        any line that is not a JSON record (a writer killed mid-line leaves a partial last line),
        saying so."""
        if not self.enabled or not os.path.isfile(self.path):
            return
        with open(self.path, encoding="utf-8", errors="replace") as f:
            lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
        kept, broken = [], []
        for number, line in lines:
            record = parse_record(line)
            if record is None:
                broken.append(number)
            elif record.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        if broken:
            log.warning("%s: dropped %d line(s) that are not a whole JSON record (line %s; a writer killed mid-line "
                        "leaves a partial last line)", self.path, len(broken), ", ".join(map(str, broken)))
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(kept)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {**record, "time": round(time.time(), 3)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            self.to_tensorboard(record)

    def to_tensorboard(self, record: dict[str, Any]) -> None:
        step = record["step"]
        if record["type"] == "train":
            for key, value in record.items():
                if key not in ("type", "step", "epoch", "iter", "time") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)
        elif record["type"] == "grad_share":
            for term, shares in record["shares"].items():
                for module, value in shares.items():
                    if value is not None:
                        self.writer.add_scalar(f"grad_share/{module}/{term}", value, step)
        else:
            for family, values in record.get("metrics", {}).items():
                for key, value in (values.items() if isinstance(values, dict) else []):
                    if isinstance(value, (int, float)):
                        self.writer.add_scalar(f"eval/{family}.{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_tensorboard(run_dir: str):  # -> SummaryWriter | None
    """A TensorBoard writer on ``run_dir`` when the ``tensorboard`` package is installed."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(run_dir)


def parse_record(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None when the line is not one (cut short, garbled)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
