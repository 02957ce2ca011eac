"""Finding, reading and decoding image files: every bad input gets a specific reason, nothing hangs or prints."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img_agent.errors import ImageDecodeError, InvalidInputError
from img_agent.embed.images import (
    IMAGE_EXTENSIONS,
    DuplicateContent,
    DuplicateItem,
    LoadedImage,
    decode_image_bytes,
    is_image_name,
    iter_image_files,
    make_thumbnail,
    read_image_file,
    to_rgb,
)
from img_agent.results import SkippedItem

MAX_BYTES = 10_000_000
MAX_PIXELS = 10_000_000
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _png_bytes(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **params)
    return out.getvalue()


def _jpeg_bytes(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **params)
    return out.getvalue()


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=-1)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _split(results: list) -> tuple[list[Path], dict[str, str]]:
    paths = [r for r in results if isinstance(r, Path)]
    skips = {r.path: r.reason for r in results if isinstance(r, SkippedItem)}
    return paths, skips


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A 20000x20000 1-bit PNG: ~50 KB on disk, 400 million pixels once decoded."""
    return _png_bytes(Image.new("1", (20_000, 20_000)))


# --------------------------------------------------------------------------- iter_image_files


def test_extensions_are_case_insensitive():
    assert {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"} == set(IMAGE_EXTENSIONS)
    assert is_image_name("A/B/PHOTO.JPG") and is_image_name("x.WebP") and is_image_name("y.TiFF")
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


# --------------------------------------------------------------------------- read_image_file


def test_read_good_file_records_facts(image_dir: Path):
    path = image_dir / "img_0000.jpg"
    data = path.read_bytes()
    loaded = read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert isinstance(loaded, LoadedImage)
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.size == len(data)
    assert (loaded.width, loaded.height) == (96, 72) == loaded.image.size
    assert loaded.format == "JPEG" and loaded.image.mode == "RGB"
    assert loaded.mtime == path.stat().st_mtime


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


def test_read_truncated_jpeg(tmp_path: Path):
    data = _jpeg_bytes(_photo(200, 150))
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"^truncated or corrupt image: "):
        read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


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


def test_known_content_is_refused_before_decoding(tmp_path: Path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"not even an image")  # decoding would fail: the duplicate check must come first
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    asked: list[str] = []

    def known(digest: str) -> bool:
        asked.append(digest)
        return True

    with pytest.raises(DuplicateContent) as info:
        read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, known_hash=known)
    assert info.value.sha256 == sha and asked == [sha]
    item = DuplicateItem.from_signal(str(path), info.value)
    assert isinstance(item, SkippedItem) and item.reason.startswith("duplicate") and item.sha256 == sha
    with pytest.raises(ImageDecodeError):
        read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, known_hash=lambda _: False)


# --------------------------------------------------------------------------- decode_image_bytes


def test_decompression_bomb_is_refused_from_the_header(bomb_png: bytes):
    assert len(bomb_png) < 200_000
    with pytest.raises(ImageDecodeError, match=r"^image too large: "):
        decode_image_bytes(bomb_png, max_pixels=MAX_PIXELS)


def test_too_many_pixels_names_size_and_limit_without_warnings():
    data = _png_bytes(Image.new("1", (10_000, 9_000)))  # above Pillow's warning threshold (89.5 M)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageDecodeError) as info:
            decode_image_bytes(data, max_pixels=MAX_PIXELS)
    assert str(info.value) == "image too large: 10000x9000 pixels exceeds max_image_pixels=10000000"
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_exif_orientation_swaps_width_and_height():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    base = Image.new("RGB", (40, 20), (255, 0, 0))
    base.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left of the stored image
    image, fmt, width, height = decode_image_bytes(_jpeg_bytes(base, exif=exif, quality=95), max_pixels=MAX_PIXELS)
    assert fmt == "JPEG" and (width, height) == (20, 40) == image.size
    r, _, b = image.getpixel((10, 2))  # stored left edge is now the top
    assert b > 200 and r < 60


def test_jpeg_draft_decodes_smaller_but_reports_full_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _jpeg_bytes(_photo(800, 400), exif=exif)
    image, _, width, height = decode_image_bytes(data, max_pixels=MAX_PIXELS, draft_size=64)
    assert (width, height) == (400, 800)
    assert image.width < 400 and image.height < 800 and min(image.size) >= 64
    assert image.height > image.width  # orientation applied to the reduced image too


def test_other_formats_are_reduced_with_draft_size():
    image, fmt, width, height = decode_image_bytes(_png_bytes(_photo(800, 600)), max_pixels=MAX_PIXELS, draft_size=100)
    assert fmt == "PNG" and (width, height) == (800, 600)
    assert image.size == (134, 100)  # 800 / 6, rounded up
    full, *_ = decode_image_bytes(_png_bytes(_photo(800, 600)), max_pixels=MAX_PIXELS)
    assert full.size == (800, 600)


def test_palette_with_transparency_is_composited_on_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0] + [0, 0, 0] * 255)  # index 0 red
    pal.paste(1, (0, 0, 4, 8))  # left half index 1 ...
    image, fmt, *_ = decode_image_bytes(_png_bytes(pal, transparency=1), max_pixels=MAX_PIXELS)  # ... transparent
    assert fmt == "PNG" and image.mode == "RGB"
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((6, 1)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGBA", "RGBa", "LA", "La", "PA"])
def test_alpha_is_composited_on_white(mode: str):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 2, 4))
    src = rgba.convert("LA").convert(mode) if mode == "La" else rgba.convert(mode)
    assert src.mode == mode
    image = to_rgb(src)
    assert image.mode == "RGB"
    assert image.getpixel((3, 0)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb():
    image, fmt, *_ = decode_image_bytes(
        _jpeg_bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95), max_pixels=MAX_PIXELS
    )
    assert fmt == "JPEG" and image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_png_is_scaled_to_8_bits():
    arr = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    image, fmt, width, height = decode_image_bytes(_png_bytes(src), max_pixels=MAX_PIXELS)
    assert (fmt, width, height, image.mode) == ("PNG", 4, 1, "RGB")
    assert [image.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (4, 4, 4)]


def test_float_and_32_bit_images_are_scaled():
    as_float = to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F"))
    assert [as_float.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    as_int = to_rgb(Image.fromarray(np.array([[-10, 0, 10]], dtype=np.int32), "I"))
    assert [as_int.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    bilevel = to_rgb(Image.new("1", (2, 2), 1))
    assert bilevel.mode == "RGB" and bilevel.getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame_in_rgb():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((0, 255, 0), (255, 0, 0))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    image, fmt, width, height = decode_image_bytes(out.getvalue(), max_pixels=MAX_PIXELS)
    assert (fmt, width, height, image.mode) == ("GIF", 10, 10, "RGB")
    r, g, _ = image.getpixel((5, 5))
    assert g > 200 and r < 60


def test_truncated_png_is_reported():
    data = _png_bytes(_photo(64, 64))
    with pytest.raises(ImageDecodeError, match=r"^truncated or corrupt image: "):
        decode_image_bytes(data[: len(data) // 2], max_pixels=MAX_PIXELS)


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_is_a_small_jpeg_with_the_same_aspect():
    data = make_thumbnail(_photo(400, 200), max_side=64, quality=70)
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "JPEG" and thumb.size == (64, 32)
    rgba_thumb = Image.open(io.BytesIO(make_thumbnail(Image.new("RGBA", (10, 10), (0, 0, 0, 0)))))
    assert rgba_thumb.size == (10, 10) and rgba_thumb.getpixel((5, 5))[0] > 245  # transparent -> white
    with pytest.raises(InvalidInputError):
        make_thumbnail(_photo(10, 10), max_side=0)
    with pytest.raises(InvalidInputError):
        make_thumbnail(_photo(10, 10), quality=101)
