"""Knowledge base: ingestion (extract -> chunk -> embed -> pgvector), retrieval, semantic cache."""
