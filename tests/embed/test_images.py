"""Finding and reading image files: every bad input gets a specific reason, nothing hangs or prints."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from img_agent.embed.images import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    decode_file,
    is_image_name,
    iter_image_files,
    read_file,
    read_image_file,
)
from img_agent.errors import ImageDecodeError
from img_agent.results import SkippedItem
from img_agent.testing import make_images

MAX_BYTES = 10_000_000
MAX_PIXELS = 10_000_000
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _split(results: list) -> tuple[list[Path], dict[str, str]]:
    paths = [r for r in results if isinstance(r, Path)]
    skips = {r.path: r.reason for r in results if isinstance(r, SkippedItem)}
    return paths, skips


# --------------------------------------------------------------------------- iter_image_files


def test_extensions_are_case_insensitive():
    assert {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"} == set(
        IMAGE_EXTENSIONS
    )
    assert is_image_name("A/B/PHOTO.JPG") and is_image_name("x.WebP") and is_image_name("y.TiFF")
    assert is_image_name("IMG_0001.HEIC") and is_image_name("z.avif")
    assert not is_image_name("notes.txt") and not is_image_name("jpg")


def test_walk_yields_absolute_resolved_sorted_images_once(image_dir: Path, monkeypatch):
    (image_dir / "notes.txt").write_text("not an image")
    (image_dir / "UPPER.JPG").write_bytes((image_dir / "img_0000.jpg").read_bytes())
    (image_dir / ".hidden").mkdir()
    (image_dir / ".hidden" / "h.png").write_bytes((image_dir / "img_0002.png").read_bytes())
    monkeypatch.chdir(image_dir.parent)

    first = list(iter_image_files([image_dir.name]))  # relative input
    paths, skips = _split(first)
    assert skips == {}
    assert all(p.is_absolute() and p == p.resolve() for p in paths)
    assert len(paths) == len(set(paths)) == 12 + 2  # generated + UPPER.JPG + hidden folder kept
    assert not any(p.suffix == ".txt" for p in paths)
    assert list(iter_image_files([image_dir])) == first  # deterministic
    # Depth-first in name order: a folder's entries are sorted by name.
    top_level = [p.name for p in paths if p.parent == image_dir]
    assert top_level == sorted(top_level)

    # The folder and one of its files given again, plus a link to a file: each file once.
    link = image_dir.parent / "link.jpg"
    link.symlink_to(image_dir / "img_0000.jpg")
    again, _ = _split(list(iter_image_files([image_dir, image_dir / "img_0000.jpg", link, image_dir])))
    assert again == paths


def test_walk_not_recursive(image_dir: Path):
    paths, _ = _split(list(iter_image_files([image_dir], recursive=False)))
    assert paths and all(p.parent == image_dir for p in paths)


def test_explicit_file_is_yielded_whatever_its_extension(tmp_path: Path):
    odd = tmp_path / "picture.data"
    odd.write_bytes(b"whatever")
    assert list(iter_image_files([odd])) == [odd.resolve()]


def test_missing_paths_and_broken_links_are_reported_and_walk_goes_on(image_dir: Path, tmp_path: Path):
    (image_dir / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "dangling_arg.png").symlink_to(tmp_path / "gone.png")
    results = list(iter_image_files([tmp_path / "nope", image_dir, tmp_path / "dangling_arg.png"]))
    paths, skips = _split(results)
    assert len(paths) == 12
    assert skips == {
        str(tmp_path / "nope"): "no such file or directory",
        str(image_dir / "dangling.jpg"): "broken symbolic link",
        str(tmp_path / "dangling_arg.png"): "broken symbolic link",
    }


def test_symlink_loops_end_and_are_reported(image_dir: Path, tmp_path: Path):
    (image_dir / "sub" / "back_to_top").symlink_to(image_dir)  # directory loop
    (image_dir / "a.jpg").symlink_to(image_dir / "b.jpg")  # link chain loop
    (image_dir / "b.jpg").symlink_to(image_dir / "a.jpg")
    paths, skips = _split(list(iter_image_files([image_dir])))
    assert len(paths) == 12
    assert skips == {
        str(image_dir / "sub" / "back_to_top"): "symbolic link loop",
        str(image_dir / "a.jpg"): "symbolic link loop",
        str(image_dir / "b.jpg"): "symbolic link loop",
    }


def test_linked_folder_outside_is_walked_once(image_dir: Path, tmp_path: Path):
    (image_dir / "alias").symlink_to(image_dir / "sub")  # same folder by another route
    paths, skips = _split(list(iter_image_files([image_dir])))
    assert skips == {} and len(paths) == 12


def test_special_file_with_image_name_is_reported(tmp_path: Path):
    folder = tmp_path / "f"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    assert list(iter_image_files([folder])) == [SkippedItem(path=str(folder / "pipe.jpg"), reason="not a regular file")]


def _deny(monkeypatch, module_function: str, denied: Path) -> None:
    """Make ``os.<function>`` fail with EACCES for ``denied`` (root ignores file modes, so chmod cannot)."""
    import img_agent.embed.images as images_module

    real = getattr(os, module_function)

    def guarded(path, *args, **kwargs):
        if Path(path) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(images_module.os, module_function, guarded)


def test_unreadable_folder_is_reported(image_dir: Path, monkeypatch):
    locked = image_dir / "locked"
    locked.mkdir()
    (locked / "x.jpg").write_bytes((image_dir / "img_0000.jpg").read_bytes())
    if IS_ROOT:
        _deny(monkeypatch, "scandir", locked)
    else:
        locked.chmod(0)
    try:
        paths, skips = _split(list(iter_image_files([image_dir])))
    finally:
        locked.chmod(0o755)
    assert skips == {str(locked): "permission denied"}
    assert len(paths) == 12


# --------------------------------------------------------------------------- reading


def test_read_good_file_records_facts(image_dir: Path):
    path = image_dir / "img_0000.jpg"
    data = path.read_bytes()
    loaded = read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert isinstance(loaded, LoadedImage)
    facts = loaded.facts
    assert facts.path == str(path)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert facts.size == len(data)
    assert (facts.width, facts.height) == (96, 72) == loaded.image.size
    assert facts.format == "JPEG" and loaded.image.mode == "RGB"
    assert facts.mtime == path.stat().st_mtime


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "zero-byte file"),
        (b"this is a text file, not a JPEG" * 10, "not an image (unrecognised format)"),
    ],
)
def test_read_bad_content(tmp_path: Path, content: bytes, reason: str):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as info:
        read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert str(info.value) == reason


def test_read_missing_broken_link_and_special_files(tmp_path: Path):
    with pytest.raises(ImageDecodeError, match=r"^no such file or directory$"):
        read_image_file(tmp_path / "nope.jpg", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageDecodeError, match=r"^broken symbolic link$"):
        read_image_file(tmp_path / "dangling.jpg", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    os.mkfifo(tmp_path / "pipe.jpg")  # must not block waiting for a writer
    with pytest.raises(ImageDecodeError, match=r"^not a regular file$"):
        read_image_file(tmp_path / "pipe.jpg", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    with pytest.raises(ImageDecodeError, match=r"^not a regular file$"):
        read_image_file(tmp_path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_read_file_too_large(image_dir: Path):
    with pytest.raises(ImageDecodeError, match=r"^file too large: \d+ bytes exceeds max_file_bytes=100$"):
        read_image_file(image_dir / "img_0000.jpg", max_bytes=100, max_pixels=MAX_PIXELS)


def test_read_permission_denied(image_dir: Path, monkeypatch):
    path = image_dir / "img_0000.jpg"
    if IS_ROOT:
        _deny(monkeypatch, "open", path)
    else:
        path.chmod(0)
    with pytest.raises(ImageDecodeError, match=r"^permission denied$"):
        read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_content_is_hashed_before_any_decoding(tmp_path: Path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"not even an image")  # decoding would fail: the hash must be known first
    raw = read_file(path, max_bytes=MAX_BYTES)
    assert raw.facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and raw.data == path.read_bytes()
    assert (raw.facts.width, raw.facts.height, raw.facts.format) == (0, 0, "")
    with pytest.raises(ImageDecodeError):
        decode_file(raw, max_pixels=MAX_PIXELS)


# --------------------------------------------------------------------------- confinement


class _Roots:
    """A :class:`~img_agent.embed.images.Confinement` over resolved folders (as the tools' sandbox is)."""

    def __init__(self, *roots: Path) -> None:
        self.roots = tuple(r.resolve() for r in roots)

    def contains(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def describe_roots(self) -> str:
        return "allowed folders: " + ", ".join(str(r) for r in self.roots)


@pytest.fixture
def confined(tmp_path: Path) -> dict[str, Path]:
    """root/ (allowed) with images, outside/ (not allowed), and links out of root and within it."""
    root = tmp_path / "root"
    make_images(root, 4)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    make_images(root / ".hidden", 1, seed=3)
    outside = tmp_path / "outside"
    make_images(outside, 2, seed=2)
    (root / "link_out.jpg").symlink_to(outside / "img_0000.jpg")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in.jpg").symlink_to(root / "img_0000.jpg")
    return {"root": root, "outside": outside}


def test_confined_walk_follows_no_link_out(confined: dict[str, Path]) -> None:
    root, outside = confined["root"], confined["outside"]
    allowed = _Roots(root)
    paths, skips = _split(list(iter_image_files([root], confine=allowed)))
    names = sorted(str(p.relative_to(root)) for p in paths)
    # images (incl. hidden folders), the inside link resolved and deduplicated; no .txt; nothing from outside
    assert names == [".hidden/img_0000.jpg", "img_0000.jpg", "img_0001.jpg", "img_0002.png", "sub/img_0003.jpg"]
    assert skips == {
        str(root / "link_out.jpg"): f"symbolic link to a file outside the allowed folders: {root}",
        str(root / "dir_out"): f"symbolic link to a folder outside the allowed folders: {root}",
    }
    assert all(str(outside) not in reason for reason in skips.values())  # the link target is not revealed

    top, _ = _split(list(iter_image_files([root], recursive=False, confine=allowed)))
    assert sorted(p.name for p in top) == ["img_0000.jpg", "img_0001.jpg", "img_0002.png"]

    explicit = [root / "notes.txt", root / "img_0000.jpg", root / "img_0000.jpg"]
    assert list(iter_image_files(explicit, confine=allowed)) == [root / "notes.txt", root / "img_0000.jpg"]

    # unconfined, the same links are followed
    free, free_skips = _split(list(iter_image_files([root])))
    assert free_skips == {} and (outside / "img_0001.jpg").resolve() in free


def test_confined_walk_refuses_an_explicit_path_outside(confined: dict[str, Path]) -> None:
    root, outside = confined["root"], confined["outside"]
    results = list(iter_image_files([outside / "img_0000.jpg", root / "link_out.jpg"], confine=_Roots(root)))
    assert results == [
        SkippedItem(path=str(outside / "img_0000.jpg"), reason=f"outside the allowed folders: {root}"),
        SkippedItem(path=str(root / "link_out.jpg"), reason=f"symbolic link to a file outside the allowed folders: {root}"),
    ]


def test_confined_walk_keeps_the_other_reasons(confined: dict[str, Path]) -> None:
    root = confined["root"]
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    (root / "sub" / "back_to_top").symlink_to(root)
    _, skips = _split(list(iter_image_files([root], confine=_Roots(root))))
    assert skips[str(root / "dangling.jpg")] == "broken symbolic link"
    assert skips[str(root / "sub" / "back_to_top")] == "symbolic link loop"
