"""Reading a shard's images: the fast ustar walk must give what `tarfile` gives, or hand over to it."""
from __future__ import annotations

import io
import tarfile

import pytest

from datacurate.images import ShardImageError, _ustar_files, read_tar_images

FILES = {f"{i:09d}.{ext}": bytes([i % 251]) * (i * 37 % 1500 + 1)
         for i in range(40) for ext in ("jpg", "txt", "json")}


def _write(path, fmt, files=FILES, directory=False, long_name=None):
    with tarfile.open(path, "w", format=fmt) as tf:
        if directory:
            d = tarfile.TarInfo("sub")
            d.type = tarfile.DIRTYPE
            tf.addfile(d)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 1796313215.455056   # a float mtime: pax writes a header for it
            tf.addfile(ti, io.BytesIO(data))
        if long_name:
            ti = tarfile.TarInfo(long_name)
            ti.size = 3
            tf.addfile(ti, io.BytesIO(b"abc"))
    return path


def _by_tarfile(path):
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]


def test_webdataset_shard_read_without_tarfile(tmp_path):
    import webdataset as wds

    path = str(tmp_path / "wds.tar")
    with wds.TarWriter(path) as w:
        for i in range(30):
            w.write({"__key__": f"{i:09d}", "jpg": bytes([i]) * (100 + i), "txt": f"caption {i}"})
    fast = _ustar_files(open(path, "rb").read())
    assert fast is not None and fast == _by_tarfile(path)
    got = read_tar_images(tmp_path / "wds.tar", [f"{i:09d}" for i in (3, 0, 29)], "00000")
    assert got == {f"{i:09d}": bytes([i]) * (100 + i) for i in (3, 0, 29)}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])
def test_every_tar_format_reads_the_same_bytes(tmp_path, fmt):
    path = _write(tmp_path / "s.tar", fmt, directory=True)
    fast = _ustar_files(path.read_bytes())
    assert fast == _by_tarfile(path)           # GNU headers are plain enough for the walk too
    keys = [f"{i:09d}" for i in range(40)]
    assert read_tar_images(path, keys, "s") == {k: FILES[k + ".jpg"] for k in keys}


def test_long_names_go_through_pax_or_tarfile(tmp_path):
    long = "d" * 90 + "/" + "e" * 80 + "/000000099.jpg"
    pax = _write(tmp_path / "pax.tar", tarfile.PAX_FORMAT, long_name=long)
    assert _ustar_files(pax.read_bytes())[-1] == (long, b"abc")          # the pax path record wins
    gnu = _write(tmp_path / "gnu.tar", tarfile.GNU_FORMAT, long_name=long)
    assert _ustar_files(gnu.read_bytes()) is None                         # GNU long name: tarfile reads it
    for path in (pax, gnu):
        assert read_tar_images(path, ["000000099", "000000001"], "s")["000000099"] == b"abc"


def test_a_damaged_header_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "bad.tar", tarfile.USTAR_FORMAT)
    with tarfile.open(path) as tf:
        at = tf.getmembers()[7].offset
    data = bytearray(path.read_bytes())
    data[at + 3] ^= 0xFF                        # a letter of the 8th header's name: its checksum no longer holds
    path.write_bytes(bytes(data))
    assert _ustar_files(bytes(data)) is None
    with pytest.raises(ShardImageError, match=r"shard s: .*bad\.tar (is not a readable tar|has no image)"):
        read_tar_images(path, [f"{i:09d}" for i in range(40)], "s")


def test_a_truncated_tar_is_not_read_as_whole(tmp_path):
    path = _write(tmp_path / "cut.tar", tarfile.USTAR_FORMAT)
    data = path.read_bytes()
    assert _ustar_files(data[:len(data) // 2 + 100]) is None
    path.write_bytes(data[:len(data) // 2 + 100])
    with pytest.raises(ShardImageError, match=r"cut\.tar (is not a readable tar|has no image for key)"):
        read_tar_images(path, [f"{i:09d}" for i in range(40)], "s")
