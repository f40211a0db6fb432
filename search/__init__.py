"""Test-time search over partial solutions, guided by outcome and process reward models:
best-of-N (with weighted majority), beam search, particle filtering, entropic particle
filtering (annealing + look-ahead) and A*-decoding. One algorithm per module, each a
`SearchController`: `await algo(task)` gives an `Outcome`, `await algo.search(task)` a
`SearchResult` with the search tree. Verifiers beside them: the judge and checker
(`rewards`), token confidence (`confidence`), program agreement (`program_reward`), a trained
head (`head_reward`), the trained value model (`value_model`), Hugging Face reward checkpoints
in process or served by vLLM (`served_reward`), and weighted combinations of any of them
(`WeightedReward`). The torch-backed ones load on first use, so `import search` stays light."""

import importlib
from typing import Any

from search.astar import AStarDecoding
from search.base import Partial, SearchController, SearchResult, SearchTree, StepGenerator
from search.beam import BeamSearch
from search.best_of_n import BestOfN
from search.confidence import ConfidenceReward
from search.entropic_pf import EntropicParticleFilter
from search.particle_filter import ParticleFilter
from search.program_reward import ProgramReward
from search.rewards import (
    CheckerReward,
    JudgeReward,
    OutcomeReward,
    ProcessReward,
    WeightedReward,
    aggregate,
    rate,
)

_LAZY = {
    "HeadReward": "search.head_reward",
    "ValueReward": "search.value_model",
    "LocalRewardModel": "search.served_reward",
    "ServedReward": "search.served_reward",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")


__all__ = [
    "AStarDecoding",
    "BeamSearch",
    "BestOfN",
    "CheckerReward",
    "ConfidenceReward",
    "EntropicParticleFilter",
    "HeadReward",
    "JudgeReward",
    "LocalRewardModel",
    "OutcomeReward",
    "Partial",
    "ParticleFilter",
    "ProcessReward",
    "ProgramReward",
    "SearchController",
    "SearchResult",
    "SearchTree",
    "ServedReward",
    "StepGenerator",
    "ValueReward",
    "WeightedReward",
    "aggregate",
    "rate",
]
