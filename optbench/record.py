"""The run record: the one typed object that planner, worker, storage and analysis share.

A run is fully described by this small record. Its id is a content hash of the record, so
re-planning the same study gives the same ids and a finished run is recognised as finished.
Every random stream of a run (initialisation, data order, dropout) derives from ``seed`` through
:func:`derive_seed`, so two runs with the same record train identically.

Deferred re-runs ("best setting of budget B, seed s") are planned before their hyperparameters
are known. Their identity is the record *without* hyperparameters, so the id is stable from
planning to resolution.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

#: kinds of runs in a study
KINDS = ("oneshot", "tuning", "rerun")
#: problem arguments that say *where* data are, not *what* is trained: kept out of the run id so the
#: same study planned on two clusters (different data paths) has the same ids
LOCATION_ARGS = frozenset({"data_dir"})


@dataclasses.dataclass(frozen=True)
class RunRecord:
    study: str
    problem: str
    optimizer: str
    schedule: str
    budget: str  # "oneshot" or a tuning budget name; a tuning trial carries the smallest budget holding it
    kind: str  # one of KINDS
    trial: int  # tuning trial index (0-based); -1 for one-shot and re-runs
    seed: int
    batch_size: int
    num_epochs: int
    hparams: tuple[tuple[str, float], ...] = ()  # sorted (name, value); empty until a re-run is resolved
    problem_args: tuple[tuple[str, Any], ...] = ()  # problem options that change results (sorted)
    schedule_args: tuple[tuple[str, Any], ...] = ()

    def identity(self) -> dict[str, Any]:
        """The fields hashed into the run id (a re-run's hyperparameters are a result, not identity)."""
        d = dataclasses.asdict(self)
        d["hparams"] = [] if self.kind == "rerun" else [list(p) for p in self.hparams]
        d["problem_args"] = [list(p) for p in self.problem_args if p[0] not in LOCATION_ARGS]
        d["schedule_args"] = [list(p) for p in self.schedule_args]
        return d

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def hp(self) -> dict[str, float]:
        return dict(self.hparams)

    @property
    def resolved(self) -> bool:
        return self.kind != "rerun" or bool(self.hparams)

    def with_hparams(self, hparams: Mapping[str, float]) -> "RunRecord":
        return dataclasses.replace(self, hparams=canonical_items(hparams))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunRecord":
        d = json.loads(text)
        for key in ("hparams", "problem_args", "schedule_args"):
            d[key] = tuple(tuple(p) for p in d.get(key, ()))
        return cls(**d)


def canonical_items(mapping: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Sorted (key, value) pairs with floats as plain floats, so equal settings hash equally."""
    if not mapping:
        return ()
    out = []
    for k, v in sorted(mapping.items()):
        if isinstance(v, bool) or isinstance(v, str):
            out.append((k, v))
        elif isinstance(v, int):
            out.append((k, v))
        else:
            out.append((k, float(v)))
    return tuple(out)


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one random stream of a run (AlgoPerf folds keys the same way)."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
