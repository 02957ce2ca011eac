"""Encoding image files on a Ray cluster with Ray Data: the batches of :mod:`img_agent.embed.pipeline`, spread out.

Data flows one way::

    paths --read, hash, decode (Ray tasks, on every CPU)--> facts + decoded pixels | skip reason
          --prepare, embed (a pool of encoder actors)--> facts + vector | skip reason
          --driver--> Encoded batches and SkippedItems

* Read tasks run :func:`~img_agent.embed.images.read_file` and :func:`~img_agent.embed.images.decode_file`
  (draft size: the model input side), so a bad file gets the skip reason local indexing gives. They
  import neither torch nor the model.
* Between the stages travel the decoded RGB pixels as raw ``uint8`` bytes with their height and
  width, never PIL images. The draft decode already shrinks them (JPEG by DCT scaling, other formats
  to a short side below twice the input side), so rows stay small, and the actors'
  :meth:`~img_agent.embed.encoder.ClipEncoder.prepare` on them gives the pixels, hence the vectors,
  of local indexing. Photo (EXIF) facts travel as JSON.
* Each encoder actor builds its model once (:func:`~img_agent.embed.encoder.get_encoder`) and runs
  ``prepare``, ``collate`` and ``encode_pixels`` per batch, as the local pipeline does; one GPU per
  actor when the cluster has GPUs, CPUs otherwise.

Every node must import img_agent and build the model: random-weight presets (``tiny-test``) are
built in-process; real weights come from each node's Hugging Face cache, or from a checkpoint path
given as ``pretrained`` that exists on every node. A local Ray started here shares this machine's cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from img_agent.embed import images
from img_agent.embed.pipeline import Encoded
from img_agent.errors import ConfigError, ImgAgentError, InvalidInputError, ModelError
from img_agent.results import FileFacts, PhotoMeta, ProgressCallback, SkippedItem

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["RAY_INSTALL_HINT", "encode_on_ray"]

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install 'img-agent[ray]'"
"""How to install what encoding on Ray needs."""
MAX_LOCAL_CPUS = 64
"""Most CPUs a local Ray started here uses."""
CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a Ray cluster address to answer before giving up."""
_PATHS_PER_BLOCK, _MAX_BLOCKS = 256, 4096
"""Input blocks: two per CPU at least, else one per 256 paths up to 4096 (few tasks for millions of files)."""


def encode_on_ray(
    paths: Sequence[str | os.PathLike[str]],
    *,
    model: str,
    pretrained: str | None,
    address: str | None,
    batch_size: int,
    max_bytes: int,
    max_pixels: int,
    image_size: int | None = None,
    inference: str = "auto",
    actors: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Encoded | SkippedItem]:
    """Read, decode and embed ``paths`` on Ray: an :class:`Encoded` per batch, a :class:`SkippedItem` per bad file.

    Args:
        paths: image files (absolute, as the folder walk gives them; on a cluster, readable there on every node).
        model, pretrained, inference: the encoder every actor builds (:func:`~img_agent.embed.encoder.get_encoder`).
        address: a Ray cluster (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``); None uses the Ray
            this process is already connected to, or starts a local one on this machine (shut down at the end).
        batch_size: images per model forward, and most files per yielded item.
        max_bytes, max_pixels: the file size and pixel limits of local indexing.
        image_size: the model input side (the decode draft size); None builds the model here once to learn it.
        actors: encoder actors; default one per GPU of the cluster, else one per node.
        progress: ``progress(done, total, message)`` after each batch of results.
        cancel: checked before each batch of results is taken; once set, the stream ends (batches
            already yielded stand), without a final progress call.

    Every input path comes out once: in an ``Encoded`` (its facts with sha256, size, mtime, width,
    height, format and photo facts; ``vectors`` float32 unit rows) or as a ``SkippedItem`` with the
    reason local indexing gives. Batches come in completion order, not input order.

    Raises:
        ConfigError: Ray is not installed, or (on iteration) the cluster at ``address`` cannot be reached.
            An img-agent error on a worker (ModelError: no weights on that node) is raised as itself.
        InvalidInputError: ``batch_size`` or ``actors`` below 1.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    if actors is not None and actors < 1:
        raise InvalidInputError(f"actors must be at least 1, got {actors}")
    ray = _import_ray()
    if image_size is None:
        from img_agent.embed.encoder import get_encoder

        image_size = get_encoder(model, pretrained or "", "cpu", "torch").image_size
    job = _Job(
        paths=[os.fspath(p) for p in paths],
        model=model,
        pretrained=pretrained or "",
        inference=inference,
        batch_size=batch_size,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        image_size=image_size,
        actors=actors,
    )
    return _run(ray, job, address, progress, cancel)


@dataclasses.dataclass(frozen=True)
class _Job:
    paths: list[str]
    model: str
    pretrained: str
    inference: str
    batch_size: int
    max_bytes: int
    max_pixels: int
    image_size: int
    actors: int | None


def _import_ray() -> ModuleType:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(
            f"encoding on Ray needs the ray package with Ray Data ({exc}); install it with {RAY_INSTALL_HINT}"
        ) from None
    return ray


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Connect to Ray (or start a local one); True when this call started it."""
    if ray.is_initialized():
        if address is not None:
            logger.info("Ray is already initialised in this process; using it instead of %s", address)
        return False
    if address is None:
        cpus = min(os.cpu_count() or 1, MAX_LOCAL_CPUS)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return True
    problem = _unreachable(address)
    if problem is None:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            problem = str(exc).strip().rstrip(".")
    if problem is not None:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r}: {problem}. Start one with 'ray start --head' "
            "(then use 'auto'), or give the address of its head node (host:6379, or ray://host:10001)."
        )
    return True


def _unreachable(address: str) -> str | None:
    """Why nothing listens at a ``host:port`` or ``ray://host:port`` address; None when it answers or is another form.

    ``ray.init`` retries an address that does not answer for minutes; this check takes seconds.
    """
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            return None
    except OSError as exc:
        return f"nothing answers at {hostport} within {CONNECT_TIMEOUT:g} s ({exc.strerror or exc})"


def _run(
    ray: ModuleType, job: _Job, address: str | None, progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Iterator[Encoded | SkippedItem]:
    if not job.paths or (cancel is not None and cancel.is_set()):
        return
    started = _connect(ray, address)
    try:
        yield from _stream(ray, job, progress, cancel)
    finally:
        if started:
            ray.shutdown()


def _stream(
    ray: ModuleType, job: _Job, progress: ProgressCallback | None, cancel: threading.Event | None
) -> Iterator[Encoded | SkippedItem]:
    total = len(job.paths)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    blocks = min(total, max(2 * cpus, min(-(-total // _PATHS_PER_BLOCK), _MAX_BLOCKS)))
    resources = _actor_resources(ray, job.actors)
    decoded = ray.data.from_items([{"path": p} for p in job.paths], override_num_blocks=blocks).map_batches(
        _read_batch,
        batch_size=job.batch_size,
        batch_format="numpy",
        fn_kwargs={"max_bytes": job.max_bytes, "max_pixels": job.max_pixels, "draft_size": job.image_size},
        # As many read tasks at once as the cluster has CPUs. A task pool sized unlike the actor pool
        # is also never fused into the (few) encoder actors, so decoding stays spread over every CPU.
        compute=ray.data.TaskPoolStrategy(size=max(cpus, resources["size"] + 1)),
    )
    embedded = decoded.map_batches(
        _EncodeActor,
        batch_size=job.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={
            "model": job.model,
            "pretrained": job.pretrained,
            "inference": job.inference,
            "device": "cuda" if resources["num_gpus"] else "cpu",
        },
        compute=ray.data.ActorPoolStrategy(size=resources["size"]),
        num_gpus=resources["num_gpus"],
        num_cpus=resources["num_cpus"],
    )
    embedded.context.enable_progress_bars = False  # library code: nothing drawn on the terminal
    embedded.context.raise_original_map_exception = True  # a ModelError in a worker arrives as one
    batches = embedded.iter_batches(batch_size=job.batch_size, batch_format="numpy")
    try:
        yield from _results(batches, total, progress, cancel)
    except ray.exceptions.RayError as exc:
        # A worker's img-agent error (a model that cannot be built on a node) is raised as itself.
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ImgAgentError):
            raise cause from None
        raise
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _results(
    batches: Iterable[dict[str, np.ndarray]], total: int, progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Iterator[Encoded | SkippedItem]:
    """The encoder actors' result batches as ``Encoded`` batches and skips, with progress and cancel."""
    done = encoded = skipped = 0
    for batch in batches:
        if cancel is not None and cancel.is_set():
            logger.info("encoding on Ray cancelled after %d of %d files", done, total)
            return
        files, rows = [], []
        for i, reason in enumerate(batch["reason"]):
            if reason:
                skipped += 1
                yield SkippedItem(path=str(batch["path"][i]), reason=str(reason))
            else:
                files.append(_facts(batch, i))
                rows.append(i)
        if rows:
            encoded += len(rows)
            yield Encoded(files, np.ascontiguousarray(batch["vector"][rows], dtype=np.float32))
        done += len(batch["reason"])
        if progress is not None:
            progress(done, total, f"encoded {encoded} of {total} images ({skipped} skipped)")


def _actor_resources(ray: ModuleType, actors: int | None) -> dict[str, Any]:
    """``size`` (actors), ``num_gpus`` and ``num_cpus`` (each) for the encoder actors on this cluster."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        if actors is not None and actors > gpus:
            logger.warning("%d encoder actors asked for but the cluster has %d GPUs; using %d", actors, gpus, gpus)
        return {"size": min(actors or gpus, gpus), "num_gpus": 1, "num_cpus": 1}
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    count = actors or max(1, sum(1 for cpus in nodes if cpus))
    node_cpus = int(max(nodes, default=1))
    # Half the CPUs encode, half read and decode; an actor never asks for more than one node has.
    per_actor = max(1, min(node_cpus // 2, int(sum(nodes)) // (2 * count)))
    return {"size": count, "num_gpus": 0, "num_cpus": per_actor}


# --------------------------------------------------------------------------- on the workers

_FACT_COLUMNS = ("path", "size", "mtime", "sha256", "width", "height", "format", "photo", "reason")
_NUMBER_COLUMNS = {
    "size": np.int64, "mtime": np.float64, "width": np.int64, "height": np.int64,
    "pixel_height": np.int64, "pixel_width": np.int64,
}


def _read_batch(batch: dict[str, np.ndarray], *, max_bytes: int, max_pixels: int, draft_size: int) -> dict[str, Any]:
    """Read, hash and decode each path of a batch: facts and pixels, or the skip reason."""
    out: dict[str, list[Any]] = {name: [] for name in (*_FACT_COLUMNS, "pixels", "pixel_height", "pixel_width")}
    for path in map(str, batch["path"]):
        facts, pixels, reason = _read_one(path, max_bytes, max_pixels, draft_size)
        row = dataclasses.asdict(facts or FileFacts(path=path, size=0, mtime=0.0, sha256=""))
        row["photo"] = "" if row["photo"] is None else json.dumps(row["photo"])
        height, width = pixels.shape[:2] if pixels is not None else (0, 0)
        row.update(reason=reason, pixels=b"" if pixels is None else pixels.tobytes(), pixel_height=height,
                   pixel_width=width)
        for name, values in out.items():
            values.append(row[name])
    return _columns(out)


def _read_one(
    path: str, max_bytes: int, max_pixels: int, draft_size: int
) -> tuple[FileFacts | None, np.ndarray | None, str]:
    """(facts, RGB pixels, "") for a usable file; (facts or None, None, reason) for one to skip."""
    try:
        raw = images.read_file(path, max_bytes=max_bytes)
    except InvalidInputError as exc:
        return None, None, str(exc) or type(exc).__name__
    except OSError as exc:
        return None, None, f"cannot read file: {exc.strerror or exc}"
    try:
        loaded = images.decode_file(raw, max_pixels=max_pixels, draft_size=draft_size)
    except InvalidInputError as exc:
        return raw.facts, None, str(exc) or type(exc).__name__
    except OSError as exc:
        return raw.facts, None, f"cannot read file: {exc.strerror or exc}"
    image = loaded.image if loaded.image.mode == "RGB" else loaded.image.convert("RGB")
    return loaded.facts, np.asarray(image, dtype=np.uint8), ""


def _columns(out: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    columns = {}
    for name, values in out.items():
        if name in _NUMBER_COLUMNS:
            columns[name] = np.asarray(values, dtype=_NUMBER_COLUMNS[name])
        else:
            columns[name] = np.empty(len(values), dtype=object)
            columns[name][:] = values
    return columns


class _EncodeActor:
    """One model per actor; embeds the decoded rows of each batch, passing skipped rows through."""

    def __init__(self, *, model: str, pretrained: str, inference: str, device: str) -> None:
        from img_agent.embed.encoder import ClipEncoder, get_encoder

        # A model that cannot be built fails the first batch: a failed actor constructor reaches
        # the driver as a bare message, a failed batch with the error itself.
        self.encoder: ClipEncoder | None = None
        self.failure: ImgAgentError | None = None
        try:
            self.encoder = get_encoder(model, pretrained, device, inference)
        except ImgAgentError as exc:
            self.failure = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from PIL import Image

        if self.encoder is None:
            raise self.failure or ModelError("the encoder could not be built on this Ray worker")

        n = len(batch["path"])
        reasons = [str(r) for r in batch["reason"]]
        vectors = np.zeros((n, self.encoder.dim), dtype=np.float32)
        rows, prepared = [], []
        for i in range(n):
            if reasons[i]:
                continue
            shape = (int(batch["pixel_height"][i]), int(batch["pixel_width"][i]), 3)
            image = Image.fromarray(np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(shape), "RGB")
            try:
                prepared.append(self.encoder.prepare(image))
            except (ValueError, OSError) as exc:
                reasons[i] = f"cannot preprocess image: {exc}"
                continue
            rows.append(i)
        if rows:
            vectors[rows] = self.encoder.encode_pixels(self.encoder.collate(prepared))
        out = {name: batch[name] for name in _FACT_COLUMNS}
        out["reason"] = _columns({"reason": reasons})["reason"]
        out["vector"] = vectors
        return out


def _facts(batch: dict[str, np.ndarray], i: int) -> FileFacts:
    photo = str(batch["photo"][i])
    return FileFacts(
        path=str(batch["path"][i]),
        size=int(batch["size"][i]),
        mtime=float(batch["mtime"][i]),
        sha256=str(batch["sha256"][i]),
        width=int(batch["width"][i]),
        height=int(batch["height"][i]),
        format=str(batch["format"][i]),
        photo=PhotoMeta(**json.loads(photo)) if photo else None,
    )
