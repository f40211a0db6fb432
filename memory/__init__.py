"""Memory that learns: embedders, a faiss vector index, ACE playbooks and AgentFly case banks,
persisted in SQLite. Nothing lives here yet."""
