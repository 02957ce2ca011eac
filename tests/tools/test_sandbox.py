"""The sandbox: paths are resolved before they are checked, and nothing outside the roots is read."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from img_agent.errors import AccessDeniedError, ImageDecodeError, InvalidInputError, NotFoundError
from img_agent.testing import make_images
from img_agent.tools.sandbox import Sandbox


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """root/ (allowed) with images, root2/ and outside/ (not allowed), and links out of root."""
    root = tmp_path / "root"
    make_images(root, 4)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    make_images(root / ".hidden", 1, seed=3)
    root2 = tmp_path / "root2"
    make_images(root2, 1, seed=1)
    outside = tmp_path / "outside"
    make_images(outside, 2, seed=2)
    (root / "link_out.jpg").symlink_to(outside / "img_0000.jpg")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in.jpg").symlink_to(root / "img_0000.jpg")
    return {"root": root, "root2": root2, "outside": outside}


@pytest.fixture
def sandbox(layout: dict[str, Path]) -> Sandbox:
    return Sandbox([layout["root"]], max_file_bytes=1_000_000)


def test_inside_paths_resolve(sandbox: Sandbox, layout: dict[str, Path]) -> None:
    root = layout["root"]
    assert sandbox.resolve(str(root / "img_0000.jpg")) == root / "img_0000.jpg"
    assert sandbox.resolve(str(root)) == root
    assert sandbox.resolve("img_0001.jpg") == root / "img_0001.jpg"  # relative to a root
    assert sandbox.resolve(str(root / "sub" / ".." / "img_0000.jpg")) == root / "img_0000.jpg"
    assert sandbox.resolve(str(root / "link_in.jpg")) == root / "img_0000.jpg"


@pytest.mark.parametrize(
    "make_path",
    [
        pytest.param(lambda lay: str(lay["root"] / ".." / "outside" / "img_0000.jpg"), id="dotdot-absolute"),
        pytest.param(lambda lay: "../outside/img_0000.jpg", id="dotdot-relative"),
        pytest.param(lambda lay: str(lay["root"] / "link_out.jpg"), id="symlink-file-out"),
        pytest.param(lambda lay: str(lay["root"] / "dir_out" / "img_0001.jpg"), id="symlink-dir-out"),
        pytest.param(lambda lay: str(lay["outside"] / "img_0000.jpg"), id="absolute-elsewhere"),
        pytest.param(lambda lay: str(lay["root2"] / "img_0000.jpg"), id="prefix-trick-root2"),
        pytest.param(lambda lay: "/etc/passwd", id="system-file"),
        pytest.param(lambda lay: str(lay["outside"] / "does-not-exist.jpg"), id="missing-outside"),
    ],
)
def test_escapes_are_refused_naming_the_roots(sandbox: Sandbox, layout: dict[str, Path], make_path) -> None:
    with pytest.raises(AccessDeniedError) as info:
        sandbox.resolve(make_path(layout))
    message = str(info.value)
    assert str(layout["root"]) in message and "outside the allowed folders" in message


def test_missing_inside_is_not_found(sandbox: Sandbox, layout: dict[str, Path]) -> None:
    with pytest.raises(NotFoundError, match="No file or folder"):
        sandbox.resolve(str(layout["root"] / "nope.jpg"))
    with pytest.raises(NotFoundError, match="under any of the allowed folders"):
        sandbox.resolve("nope.jpg")


@pytest.mark.parametrize("url", ["https://example.com/cat.jpg", "file:///etc/passwd", "ftp://x/y.png"])
def test_urls_are_never_fetched(sandbox: Sandbox, url: str) -> None:
    with pytest.raises(InvalidInputError, match="never fetched"):
        sandbox.resolve(url)


def test_no_roots_refuses_everything_and_says_how_to_allow(layout: dict[str, Path]) -> None:
    empty = Sandbox([], max_file_bytes=1_000_000)
    for path in (str(layout["root"] / "img_0000.jpg"), "img_0000.jpg"):
        with pytest.raises(AccessDeniedError, match="--root"):
            empty.resolve(path)


def test_roots_are_resolved_and_deduplicated(tmp_path: Path, layout: dict[str, Path]) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(layout["root"], target_is_directory=True)
    sandbox = Sandbox([alias, layout["root"], str(layout["root"]) + "/"], max_file_bytes=10)
    assert sandbox.roots == (layout["root"],)
    assert sandbox.resolve(str(alias / "img_0000.jpg")) == layout["root"] / "img_0000.jpg"


def test_read_file_limits(layout: dict[str, Path]) -> None:
    root = layout["root"]
    big = root / "img_0000.jpg"
    small = Sandbox([root], max_file_bytes=big.stat().st_size - 1)
    with pytest.raises(InvalidInputError, match="larger than"):
        small.read_file(str(big))
    ok = Sandbox([root], max_file_bytes=1_000_000)
    resolved, data = ok.read_file(str(big))
    assert resolved == big and data == big.read_bytes()
    with pytest.raises(InvalidInputError, match="is a folder"):
        ok.read_file(str(root))
    with pytest.raises(AccessDeniedError):
        ok.read_file(str(root / "link_out.jpg"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_read_file_does_not_block_on_a_fifo(layout: dict[str, Path]) -> None:
    fifo = layout["root"] / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        Sandbox([layout["root"]], max_file_bytes=100).read_file(str(fifo))


def test_decode_base64(sandbox: Sandbox, layout: dict[str, Path]) -> None:
    raw = (layout["root"] / "img_0000.jpg").read_bytes()
    encoded = base64.b64encode(raw).decode()
    assert sandbox.decode_base64(encoded) == raw
    assert sandbox.decode_base64("data:image/jpeg;base64," + encoded) == raw
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert sandbox.decode_base64(wrapped) == raw
    assert sandbox.decode_base64(encoded.rstrip("=")) == raw  # missing padding is forgiven
    with pytest.raises(ImageDecodeError, match="not valid base64"):
        sandbox.decode_base64("this is not base64 !!!")
    with pytest.raises(InvalidInputError, match="empty"):
        sandbox.decode_base64("   ")
    with pytest.raises(InvalidInputError, match="never fetched"):
        sandbox.decode_base64("https://example.com/cat.jpg")
    tiny = Sandbox([layout["root"]], max_file_bytes=10, max_inline_bytes=100)
    with pytest.raises(InvalidInputError, match="more than"):
        tiny.decode_base64(encoded)
