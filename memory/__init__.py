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
from memory.playbook import (
    AddOp,
    Bullet,
    DeleteOp,
    DeltaOp,
    LogEntry,
    MergeOp,
    Playbook,
    PlaybookOpError,
    PlaybookSnapshot,
    TagOp,
    UpdateOp,
)
from memory.vector_index import VectorIndex

__all__ = [
    "AddOp",
    "Bullet",
    "CachedEmbedder",
    "Case",
    "CaseBank",
    "CaseHit",
    "CasePolicy",
    "DeleteOp",
    "DeltaOp",
    "Embedder",
    "HashingEmbedder",
    "LogEntry",
    "MergeOp",
    "Playbook",
    "PlaybookOpError",
    "PlaybookSnapshot",
    "SentenceTransformerEmbedder",
    "TagOp",
    "UpdateOp",
    "VectorIndex",
    "l2_normalise",
]
