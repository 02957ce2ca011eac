"""The errors img-agent raises, one small tree.

Every message says what happened and what to do about it, so adapters can hand
``str(error)`` to a person or a model unchanged.

    ImgAgentError
    ├── ConfigError            bad setting or flag value
    ├── ModelError             CLIP model cannot be built or weights cannot be had
    ├── StoreError             data directory problems
    │   ├── StoreVersionError      store written by a newer img-agent
    │   ├── StoreCorruptError      files missing or damaged
    │   ├── StoreInUseError        another process (the store's service) holds the store
    │   ├── StoreReadOnlyError     a change was asked of a store opened read-only
    │   ├── StoreWriteError        writing the store failed (disk full, I/O error); committed work is kept
    │   ├── VectorStoreError       the external vector database (Milvus) cannot be reached or refused a request
    │   └── ModelMismatchError     store was built with another model / dimension
    ├── InvalidInputError      a caller passed something unusable (bad k, bad vector shape)
    │   ├── NotFoundError          unknown image id or path
    │   ├── ImageDecodeError       bytes/file that are not a usable image
    │   └── AccessDeniedError      path outside the allowed roots
    ├── BusyError              a maintenance job is already running
    │   └── ModelLoadingError      the CLIP model is still loading; retry shortly
    ├── ServiceError           the store's resident service cannot be started or reached
    └── LLMError               the configured LLM failed (after retries)
        ├── LLMNotConfiguredError
        └── LLMTimeoutError        one call or one command ran past its total deadline
"""

from __future__ import annotations


class ImgAgentError(Exception):
    """Base class of every error img-agent raises on purpose."""


class ConfigError(ImgAgentError):
    """A setting or flag has an unusable value."""


class ModelError(ImgAgentError):
    """The CLIP model cannot be built, or its weights cannot be obtained."""


class StoreError(ImgAgentError):
    """The data directory cannot be used as it is."""


class StoreVersionError(StoreError):
    """The store was written by a newer img-agent."""


class StoreCorruptError(StoreError):
    """Files of the store are missing or damaged."""


class StoreInUseError(StoreError):
    """Another process holds the store (its service, or a program that opened it directly)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class StoreReadOnlyError(StoreError):
    """The store was opened read-only (read-only mount or no write permission): searches work, changes do not."""


class StoreWriteError(StoreError):
    """Writing the store failed (disk full, I/O error). What was committed before stays committed."""


class VectorStoreError(StoreError):
    """The external vector database (Milvus) cannot be reached, or refused a request."""


class ModelMismatchError(StoreError):
    """The store holds embeddings of another model or dimension."""


class InvalidInputError(ImgAgentError, ValueError):
    """A caller passed a value the operation cannot use."""


class NotFoundError(InvalidInputError):
    """An image id or path is not in the catalog."""


class ImageDecodeError(InvalidInputError):
    """Bytes or a file that cannot be decoded as an image."""


class AccessDeniedError(InvalidInputError):
    """A path outside the allowed roots."""


class BusyError(ImgAgentError):
    """The store is busy (a merge or rebuild runs, the model loads): try again shortly."""


class ModelLoadingError(BusyError):
    """A call needs the CLIP model while it is still loading."""


class ServiceError(ImgAgentError):
    """The store's resident service cannot be started or reached."""


class LLMError(ImgAgentError):
    """The configured LLM failed, after retries."""


class LLMNotConfiguredError(LLMError):
    """An LLM feature was asked for but no LLM is configured."""


class LLMTimeoutError(LLMError):
    """An LLM call, or a command's LLM work as a whole, ran past its total deadline."""
