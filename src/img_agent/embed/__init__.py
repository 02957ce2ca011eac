"""Pixels and text to unit vectors: image files, decoding, CLIP weights and the encoder. Knows no store."""
