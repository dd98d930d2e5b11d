"""The knowledge base: chunking, content, store, refresh workflow, RAG query, semantic cache."""
