"""Memory that learns: embedders, a faiss vector index, ACE playbooks and AgentFly case banks,
persisted in SQLite. So far: the embedders."""

from memory.embedders import Embedder, HashingEmbedder, SentenceTransformerEmbedder, l2_normalise

__all__ = ["Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "l2_normalise"]
