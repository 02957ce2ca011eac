"""The names a benchmark command accepts (light to import: the CLI builds its parser from them)."""

FAMILIES: tuple[str, ...] = ("Flat", "LSH", "PQ", "IVF", "HNSW")
"""Index families of the ANN sweep."""
DATA_KINDS: tuple[str, ...] = ("clip", "clustered", "smooth")
"""Synthetic data generators."""
QUERY_KINDS: tuple[str, ...] = ("image", "text")
"""Synthetic query sets: held-out image-like vectors, or text-like ones offset from the images."""
