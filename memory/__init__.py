"""Memory that learns: embedders, a faiss vector index, ACE playbooks and AgentFly case banks,
persisted in SQLite."""

from memory.case_bank import CaseBank
from memory.case_policy import CasePolicy
from memory.cases import Case, CaseHit
from memory.embedders import (
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    l2_normalise,
)
from memory.vector_index import VectorIndex

__all__ = [
    "CachedEmbedder",
    "Case",
    "CaseBank",
    "CaseHit",
    "CasePolicy",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "VectorIndex",
    "l2_normalise",
]
