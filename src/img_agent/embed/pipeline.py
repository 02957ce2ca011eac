"""The ingestion pipeline: read and hash ahead, decode and preprocess ahead, embed in full batches.

Data flows one way::

    paths --read()--> RawFile | SkippedItem --(caller sorts out known content)-->
          --encode()--> Encoded batches, with everything else passed through in input order

:meth:`Pipeline.read` reads and hashes files in a pool of threads, a bounded window ahead of
its consumer. The caller looks at each :class:`~img_agent.embed.images.RawFile` (its hash) and
decides whether it needs encoding; it hands :meth:`Pipeline.encode` either the ``RawFile`` or
anything else (a :class:`~img_agent.results.SkippedItem`, or its own marker for known
content). ``encode`` decodes and preprocesses the files in a second pool, a bounded window
ahead of the model, runs the model on full batches in the calling thread, and yields an
:class:`Encoded` per batch; every item that is not a ``RawFile`` comes out unchanged, in input
order. Nothing calls back into the caller.

The pools live as long as the ``with Pipeline(...)`` block; ``workers=0`` does everything inline.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from img_agent.embed import images
from img_agent.errors import InvalidInputError
from img_agent.results import FileFacts, ProgressCallback, SkippedItem

if TYPE_CHECKING:
    from img_agent.embed.encoder import ClipEncoder

__all__ = ["Encoded", "Pipeline"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Encoded:
    """One model batch: ``vectors[i]`` (unit length) is the embedding of ``files[i]``, in input order."""

    files: list[FileFacts]
    vectors: np.ndarray


@dataclass(frozen=True, slots=True)
class _Prepared:
    facts: FileFacts
    pixels: Any  # what ClipEncoder.prepare returns; collated per batch


class Pipeline:
    """Reads, decodes and embeds image files for one ingestion run.

    Args:
        encoder: the model (its ``image_size`` is the decode draft size).
        max_bytes: largest file read (``Settings.max_file_bytes``).
        max_pixels: largest image decoded (``Settings.max_image_pixels``).
        batch_size: images per model forward.
        workers: threads reading and threads decoding (each); 0 does both inline.

    Both windows are ``max(2 * batch_size, 2 * workers)`` items (:attr:`read_window`,
    :attr:`decode_window`), so memory stays bounded however many files there are.

    Raises:
        InvalidInputError: ``batch_size`` < 1 or ``workers`` < 0.
    """

    def __init__(
        self, encoder: ClipEncoder, *, max_bytes: int, max_pixels: int, batch_size: int = 32, workers: int = 2
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise InvalidInputError(f"workers must be 0 or more, got {workers}")
        self.encoder = encoder
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.workers = workers
        self.read_window = self.decode_window = max(2 * batch_size, 2 * workers)
        self._readers: ThreadPoolExecutor | None = None
        self._decoders: ThreadPoolExecutor | None = None

    def __enter__(self) -> Pipeline:
        if self.workers:
            self._readers = ThreadPoolExecutor(self.workers, thread_name_prefix="img-agent-read")
            self._decoders = ThreadPoolExecutor(self.workers, thread_name_prefix="img-agent-decode")
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in (self._readers, self._decoders):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._readers = self._decoders = None

    # ------------------------------------------------------------------ stages

    def read(self, paths: Iterable[Path]) -> Iterator[images.RawFile | SkippedItem]:
        """Each path read and hashed (or a skip with the reason), in input order."""
        return _ahead(paths, self._read_one, self._readers, self.read_window)

    def encode(
        self,
        items: Iterable[images.RawFile | T],
        *,
        total: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Encoded | SkippedItem | T]:
        """Decode, preprocess and embed every ``RawFile`` of ``items``; pass everything else through.

        Yields, in input order, each passed-through item as it comes, a :class:`SkippedItem`
        for a file that cannot be decoded, and an :class:`Encoded` whenever ``batch_size``
        images are ready (the last batch may be smaller). Deterministic: the same items give
        the same output.

        ``progress(done, total, message)`` is called after each batch and once at the end;
        ``done`` counts every item taken, and the message counts what was passed through or
        failed as skipped. ``cancel`` is checked before each item is taken; once set, the
        stream ends without encoding the partial batch (batches already yielded stand) and
        without a final progress call.
        """
        return self._encode(items, total=total, progress=progress, cancel=cancel)

    def _encode(
        self,
        items: Iterable[images.RawFile | T],
        *,
        total: int | None,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Iterator[Encoded | SkippedItem | T]:
        if cancel is not None and cancel.is_set():
            return
        prepared = _ahead(items, self._prepare_one, self._decoders, self.decode_window)
        files: list[FileFacts] = []
        pixels: list[Any] = []
        done = encoded = skipped = reported = 0
        try:
            for outcome in prepared:
                if cancel is not None and cancel.is_set():
                    logger.info("encoding cancelled after %d of %s items", done, total)
                    return
                done += 1
                if not isinstance(outcome, _Prepared):
                    skipped += 1
                    yield outcome
                    continue
                files.append(outcome.facts)
                pixels.append(outcome.pixels)
                if len(pixels) == self.batch_size:
                    yield self._forward(files, pixels)
                    encoded += len(files)
                    files, pixels = [], []
                    reported = done
                    _report(progress, done, total, encoded, skipped)
            if cancel is not None and cancel.is_set():
                return
            if pixels:
                yield self._forward(files, pixels)
                encoded += len(files)
            if done > reported:
                _report(progress, done, total, encoded, skipped)
        finally:
            prepared.close()

    # ------------------------------------------------------------------ per item (pool threads)

    def _read_one(self, path: Path) -> images.RawFile | SkippedItem:
        try:
            return images.read_file(path, max_bytes=self.max_bytes)
        except InvalidInputError as exc:
            return SkippedItem(path=str(path), reason=str(exc) or type(exc).__name__)
        except OSError as exc:
            return SkippedItem(path=str(path), reason=f"cannot read file: {exc.strerror or exc}")

    def _prepare_one(self, item: images.RawFile | T) -> _Prepared | SkippedItem | T:
        if not isinstance(item, images.RawFile):
            return item
        path = item.facts.path
        try:
            loaded = images.decode_file(item, max_pixels=self.max_pixels, draft_size=self.encoder.image_size)
        except InvalidInputError as exc:
            return SkippedItem(path=path, reason=str(exc) or type(exc).__name__)
        except OSError as exc:
            return SkippedItem(path=path, reason=f"cannot read file: {exc.strerror or exc}")
        try:
            pixels = self.encoder.prepare(loaded.image)
        except (ValueError, OSError) as exc:
            return SkippedItem(path=path, reason=f"cannot preprocess image: {exc}")
        return _Prepared(loaded.facts, pixels)

    def _forward(self, files: list[FileFacts], pixels: list[Any]) -> Encoded:
        return Encoded(files, self.encoder.encode_pixels(self.encoder.collate(pixels)))


def _ahead(
    items: Iterable[T], work: Callable[[T], R], pool: ThreadPoolExecutor | None, window: int
) -> Iterator[R]:
    """``work(item)`` for each item, in order; in ``pool`` at most ``window`` ahead (inline without a pool)."""
    if pool is None:
        for item in items:
            yield work(item)
        return
    pending: deque[Future[R]] = deque()
    source = iter(items)
    try:
        for item in itertools.islice(source, window):
            pending.append(pool.submit(work, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(source, 1):
                pending.append(pool.submit(work, item))
            yield result
    finally:
        for future in pending:
            future.cancel()
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _report(progress: ProgressCallback | None, done: int, total: int | None, encoded: int, skipped: int) -> None:
    if progress is not None:
        progress(done, total, f"encoded {encoded} of {total} images ({skipped} skipped)")
