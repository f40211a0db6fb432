"""`CasePolicy`: the parametric case-selection policy of AgentFly (Zhou et al. 2025, "AgentFly:
Fine-tuning LLM Agents without Fine-tuning LLMs", Memento), trained online from outcomes.

The paper's symbols in this file:
- Q(s, c; θ), how likely retrieving case c helps state (task) s succeed: `CasePolicy.q(s, C)`,
  a small torch MLP (one hidden ReLU layer, sigmoid output) over the features
  φ(s, c) = [s, c, s ⊙ c, |s − c|] of the task's and the case's embeddings.
- the learning objective: with a single-step M-MDP the soft-Q target is the reward itself, so Q
  is fit by binary cross-entropy, L(θ) = E[−r log Q(s, c; θ) − (1 − r) log(1 − Q(s, c; θ))]:
  `update(s, C, r)`. A retrieved case's r is whether the task it was retrieved for succeeded.
  Each update appends the (s, c, r) triples to a replay buffer (a ring of `replay` triples) and
  runs `steps` Adam steps on minibatches of `batch_size` drawn from it.
- the case-selection policy μ(c | s, M) = exp(Q(s, c)/α) / Σ_c' exp(Q(s, c')/α):
  `probabilities(s, C)`; `select(s, C, k)` draws k cases from it without replacement (the
  Gumbel-top-k trick, exact for sequential draws) and α = 0 is greedy top-k by Q. Following the
  paper's practice, C is a candidate set (the top-K cases by cosine similarity, the
  non-parametric Read), not the whole bank.

Deterministic for a seed: the weights are initialised from it and one numpy generator drives
both minibatch draws and selection. Weights, optimiser state, the replay buffer, counters and
that generator's state serialise with `to_bytes`, so a reloaded policy trains on exactly as the
saved one would; `save`/`load` keep it as a blob beside a `CaseBank`. torch is imported when a
policy is constructed, so `import memory` stays light.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from agentic.core import ConfigError, StoreError

if TYPE_CHECKING:
    from memory.case_bank import CaseBank

Array = npt.NDArray[np.float32]
BLOB_KEY = "case_policy"


class CasePolicyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(ge=1, description="embedding dimension of tasks and cases")
    hidden: int = Field(default=64, ge=1)
    alpha: float = Field(default=0.1, ge=0.0, description="softmax temperature; 0 is greedy")
    lr: float = Field(default=3e-3, gt=0.0)
    steps: int = Field(default=4, ge=1, description="optimiser steps per update")
    batch_size: int = Field(default=32, ge=1)
    replay: int = Field(default=1024, ge=1, description="replay buffer capacity (triples)")
    seed: int = 0


class CasePolicy:
    """Q(s, c) and the softmax selection over it; see the module docstring."""

    def __init__(self, dim: int, **config: Any) -> None:
        import torch

        self.config = CasePolicyConfig(dim=dim, **config)
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4 * dim, cfg.hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(cfg.hidden, 1),
            )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(cfg.seed)
        self.updates = 0
        self._buf_s = np.zeros((cfg.replay, dim), dtype=np.float32)
        self._buf_c = np.zeros((cfg.replay, dim), dtype=np.float32)
        self._buf_r = np.zeros(cfg.replay, dtype=np.float32)
        self._filled = self._next = 0
        self._lock = threading.Lock()  # calls come from worker threads (asyncio.to_thread)

    def __repr__(self) -> str:
        return (
            f"CasePolicy(dim={self.config.dim}, alpha={self.config.alpha}, updates={self.updates})"
        )

    # ---------------------------------------------------------------------------- scoring

    def _pairs(self, query: npt.ArrayLike, cases: npt.ArrayLike) -> tuple[Array, Array]:
        d = self.config.dim
        c = np.asarray(cases, dtype=np.float32)
        s = np.asarray(query, dtype=np.float32)
        if c.ndim != 2 or c.shape[1] != d:
            raise ConfigError(f"cases must have shape (n, {d}), got {c.shape}")
        if s.shape == (d,):
            s = np.broadcast_to(s, c.shape)
        if s.shape != c.shape:
            raise ConfigError(f"query must have shape ({d},) or {c.shape}, got {s.shape}")
        if not (np.isfinite(s).all() and np.isfinite(c).all()):
            raise ConfigError("query and case vectors must be finite")
        return s, c

    def _logits(self, s: Array, c: Array) -> Any:
        import torch

        st, ct = (
            torch.from_numpy(np.ascontiguousarray(s)),
            torch.from_numpy(np.ascontiguousarray(c)),
        )
        return self.net(torch.cat([st, ct, st * ct, (st - ct).abs()], dim=1)).squeeze(1)

    def q(self, query: npt.ArrayLike, cases: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Q(s, c) in (0, 1) for each row c of `cases`."""
        import torch

        s, c = self._pairs(query, cases)
        if not len(c):
            return np.zeros(0)
        with self._lock, torch.no_grad():
            return torch.sigmoid(self._logits(s, c)).double().numpy()

    def probabilities(
        self, query: npt.ArrayLike, cases: npt.ArrayLike, *, alpha: float | None = None
    ) -> npt.NDArray[np.float64]:
        """μ(c | s) = softmax(Q / α) over the candidates; α = 0 puts all mass on the best."""
        a = self._alpha(alpha)
        qs = self.q(query, cases)
        if not len(qs):
            return qs
        if a == 0.0:
            return (np.arange(len(qs)) == int(np.argmax(qs))).astype(np.float64)
        z = np.exp((qs - qs.max()) / a)
        out: npt.NDArray[np.float64] = z / z.sum()
        return out

    def select(
        self, query: npt.ArrayLike, cases: npt.ArrayLike, k: int, *, alpha: float | None = None
    ) -> list[int]:
        """Indices of k candidates drawn from μ without replacement, in draw order (α = 0:
        the k highest Q, best first). Fewer candidates than k: all of them."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be an int >= 1, got {k!r}")
        a = self._alpha(alpha)
        qs = self.q(query, cases)
        if a == 0.0:
            keys = qs
        else:
            with self._lock:  # Gumbel-top-k: argmax of log-weight + Gumbel noise, k times
                keys = qs / a + self.rng.gumbel(size=len(qs))
        return [int(i) for i in np.argsort(-keys, kind="stable")[:k]]

    def _alpha(self, alpha: float | None) -> float:
        a = self.config.alpha if alpha is None else float(alpha)
        if not a >= 0.0:
            raise ConfigError(f"alpha must be >= 0, got {alpha!r}")
        return a

    # ---------------------------------------------------------------------------- training

    def update(self, query: npt.ArrayLike, cases: npt.ArrayLike, labels: npt.ArrayLike) -> float:
        """Record (s, c, r) triples (one query for all rows, or one per row) and take
        `steps` optimiser steps on replayed minibatches; returns the last minibatch's loss."""
        import torch

        s, c = self._pairs(query, cases)
        r = np.asarray(labels, dtype=np.float32).reshape(-1)
        if r.shape != (len(c),):
            raise ConfigError(f"labels must have {len(c)} values, got {r.shape}")
        if ((r < 0) | (r > 1)).any() or not np.isfinite(r).all():
            raise ConfigError("labels must lie in [0, 1]")
        cfg, loss = self.config, 0.0
        with self._lock:
            for row in range(len(c)):
                self._buf_s[self._next], self._buf_c[self._next] = s[row], c[row]
                self._buf_r[self._next] = r[row]
                self._next = (self._next + 1) % cfg.replay
                self._filled = min(self._filled + 1, cfg.replay)
            if not self._filled:
                return 0.0
            for _ in range(cfg.steps):
                idx = self.rng.integers(0, self._filled, size=min(cfg.batch_size, self._filled))
                logits = self._logits(self._buf_s[idx], self._buf_c[idx])
                target = torch.from_numpy(self._buf_r[idx])
                batch = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
                self.opt.zero_grad()
                batch.backward()
                self.opt.step()
                loss = float(batch.detach())
            self.updates += 1
        return loss

    # ------------------------------------------------------------------------- persistence

    def to_bytes(self) -> bytes:
        import torch

        with self._lock:
            state = {
                "meta": json.dumps(
                    {
                        "format": "agentic.case_policy",
                        "version": 1,
                        "config": self.config.model_dump(),
                        "updates": self.updates,
                        "next": self._next,
                        "rng": self.rng.bit_generator.state,
                    }
                ),
                "net": self.net.state_dict(),
                "opt": self.opt.state_dict(),
                "replay": [
                    torch.from_numpy(b[: self._filled].copy())
                    for b in (self._buf_s, self._buf_c, self._buf_r)
                ],
            }
            buf = io.BytesIO()
            torch.save(state, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CasePolicy:
        """The policy `to_bytes` wrote; `StoreError` if `data` is not one."""
        import torch

        try:
            state = torch.load(io.BytesIO(data), weights_only=True)
            meta = json.loads(state["meta"])
            if meta.get("format") != "agentic.case_policy":
                raise ValueError(f"format {meta.get('format')!r}")
            policy = cls(**meta["config"])
            policy.net.load_state_dict(state["net"])
            policy.opt.load_state_dict(state["opt"])
            bufs = (policy._buf_s, policy._buf_c, policy._buf_r)
            for buf, saved in zip(bufs, state["replay"], strict=True):
                buf[: len(saved)] = saved.numpy()
            policy._filled, policy._next = len(state["replay"][2]), int(meta["next"])
        except Exception as e:  # torch raises many kinds for foreign or damaged bytes
            raise StoreError(f"not a saved CasePolicy: {type(e).__name__}: {e}") from None
        policy.updates = int(meta["updates"])
        policy.rng.bit_generator.state = meta["rng"]
        return policy

    async def save(self, bank: CaseBank, key: str = BLOB_KEY) -> None:
        """Keep the policy in `bank`'s store, beside its cases."""
        await bank.put_blob(key, await asyncio.to_thread(self.to_bytes))

    @classmethod
    async def load(cls, bank: CaseBank, key: str = BLOB_KEY) -> CasePolicy | None:
        """The policy saved in `bank` under `key`, or None if there is none."""
        data = await bank.get_blob(key)
        return None if data is None else await asyncio.to_thread(cls.from_bytes, data)
