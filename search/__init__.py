"""Test-time search over partial solutions, guided by outcome and process reward models:
best-of-N (with weighted majority), beam search, particle filtering, entropic particle
filtering (annealing + look-ahead) and A*-decoding. One algorithm per module, each a
`SearchController`: `await algo(task)` gives an `Outcome`, `await algo.search(task)` a
`SearchResult` with the search tree."""

from search.astar import AStarDecoding
from search.base import Partial, SearchController, SearchResult, SearchTree, StepGenerator
from search.beam import BeamSearch
from search.best_of_n import BestOfN
from search.entropic_pf import EntropicParticleFilter
from search.particle_filter import ParticleFilter
from search.rewards import (
    CheckerReward,
    JudgeReward,
    OutcomeReward,
    ProcessReward,
    aggregate,
    rate,
)

__all__ = [
    "AStarDecoding",
    "BeamSearch",
    "BestOfN",
    "CheckerReward",
    "EntropicParticleFilter",
    "JudgeReward",
    "OutcomeReward",
    "Partial",
    "ParticleFilter",
    "ProcessReward",
    "SearchController",
    "SearchResult",
    "SearchTree",
    "StepGenerator",
    "aggregate",
    "rate",
]
