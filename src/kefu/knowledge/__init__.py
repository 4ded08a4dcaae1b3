"""The knowledge base: ingestion, hybrid retrieval, curated answers, grounding and live updates."""
