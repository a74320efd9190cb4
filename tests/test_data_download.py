"""Download helpers, offline: archives in the real layouts served from a loopback HTTP server in a thread."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import tarfile
import threading
import zipfile

import pytest
from data_fixtures import coco_annotation, write_coco, write_voc

from retina.__main__ import main as retina_main
from retina.data import CocoDetection, VOCDetection, download_coco, download_dataset, download_voc
from retina.data import download as download_module
from retina.data.download import DownloadError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server API
        _QuietHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields ``(base_url, www_dir)``."""
    www = tmp_path / "www"
    www.mkdir()
    _QuietHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _serve(monkeypatch, path, name: str) -> None:
    """Make the archive table expect ``path`` (served under ``name``) with its real MD5."""
    monkeypatch.setitem(
        download_module.ARCHIVES, name, dataclasses.replace(download_module.ARCHIVES[name], md5=_md5(path))
    )


def _voc_tars(tmp_path, www):
    """VOCtrainval and VOCtest tars of VOC2007, both rooted at VOCdevkit/ like the real ones."""
    src = tmp_path / "src"
    write_voc(
        src / "trainval" / "VOCdevkit" / "VOC2007",
        {"000005": (32, 24, [("dog", 1, 1, 10, 10)])},
        {"trainval": ["000005"]},
    )
    write_voc(src / "test" / "VOCdevkit" / "VOC2007", {"000001": (32, 24, [("cat", 3, 3, 9, 9)])}, {"test": ["000001"]})
    for part, name in (("trainval", "VOCtrainval_06-Nov-2007.tar"), ("test", "VOCtest_06-Nov-2007.tar")):
        with tarfile.open(www / name, "w") as tar:
            tar.add(src / part / "VOCdevkit", arcname="VOCdevkit")
    return www / "VOCtrainval_06-Nov-2007.tar", www / "VOCtest_06-Nov-2007.tar"


def test_voc2007_downloads_verifies_and_extracts_into_the_real_layout(tmp_path, server, monkeypatch):
    base_url, www = server
    for tar in _voc_tars(tmp_path, www):
        _serve(monkeypatch, tar, tar.name)
    root = tmp_path / "data"

    voc_dir = download_voc(root, "2007", mirror=base_url)
    assert voc_dir == root / "VOCdevkit" / "VOC2007"
    assert VOCDetection(voc_dir, "trainval").targets()[0]["boxes"].tolist() == [[0.0, 0.0, 10.0, 10.0]]
    assert len(VOCDetection(root / "VOCdevkit", "test", year="2007")) == 1
    assert not list(root.glob("*.tar"))  # archives removed once extracted
    assert set(_QuietHandler.requests) == {"/VOCtest_06-Nov-2007.tar", "/VOCtrainval_06-Nov-2007.tar"}

    served = len(_QuietHandler.requests)
    assert download_dataset("voc2007", root, mirror=base_url) == voc_dir  # already extracted: nothing fetched
    assert len(_QuietHandler.requests) == served


def test_coco_zips_extract_into_root_coco(tmp_path, server, monkeypatch):
    base_url, www = server
    src = tmp_path / "src"
    images = [{"id": 1, "file_name": "000000000001.jpg", "width": 20, "height": 10}]
    write_coco(src, images, [coco_annotation(1, 1, 18, [1, 2, 3, 4])], [{"id": 18, "name": "dog"}], split="val2017")
    with zipfile.ZipFile(www / "val2017.zip", "w") as archive:
        archive.write(src / "images" / "val2017" / "000000000001.jpg", "val2017/000000000001.jpg")
    with zipfile.ZipFile(www / "annotations_trainval2017.zip", "w") as archive:
        archive.write(src / "annotations" / "instances_val2017.json", "annotations/instances_val2017.json")
    for name in ("val2017.zip", "annotations_trainval2017.zip"):
        _serve(monkeypatch, www / name, name)

    coco_dir = download_coco(tmp_path / "data", splits=["val2017"], mirror=base_url, keep_archives=True)
    assert coco_dir == tmp_path / "data" / "coco"
    assert (coco_dir / "val2017.zip").is_file()  # kept as asked
    dataset = CocoDetection(coco_dir / "val2017", coco_dir / "annotations" / "instances_val2017.json")
    assert dataset.classes == ["dog"] and dataset.targets()[0]["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0]]


def test_archive_placed_by_hand_is_used_without_network(tmp_path, monkeypatch):
    www = tmp_path / "www"
    www.mkdir()
    trainval, test = _voc_tars(tmp_path, www)
    root = tmp_path / "data"
    root.mkdir()
    for tar in (trainval, test):
        _serve(monkeypatch, tar, tar.name)
        tar.rename(root / tar.name)
    closed = f"http://127.0.0.1:{_closed_port()}"
    assert (download_voc(root, "2007", mirror=closed) / "JPEGImages" / "000005.jpg").is_file()


def test_archive_placed_by_hand_with_the_wrong_checksum_is_kept_and_named(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    placed = root / "VOCtrainval_11-May-2012.tar"
    placed.write_bytes(b"half a download")
    with pytest.raises(DownloadError) as error:
        download_voc(root, "2012", mirror=f"http://127.0.0.1:{_closed_port()}")
    assert f"{placed} is there, but its MD5 is not " in str(error.value)
    assert placed.read_bytes() == b"half a download"  # not deleted, not overwritten


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_error_says_what_to_download_and_where(tmp_path):
    mirror = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(DownloadError) as caught:
        download_voc(tmp_path / "data", "2012", mirror=mirror)
    message = str(caught.value)
    assert f"Could not download {mirror}/VOCtrainval_11-May-2012.tar" in message
    assert "Connection refused" in message
    assert f"put it at {tmp_path / 'data' / 'VOCtrainval_11-May-2012.tar'}" in message
    assert "6cd6e144f989b92b3379bac3b3de84fd" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained urllib trace
    assert not (tmp_path / "data" / "VOCtrainval_11-May-2012.tar").exists()


def test_wrong_checksum_is_reported(tmp_path, server):
    base_url, www = server
    (www / "VOCtrainval_11-May-2012.tar").write_bytes(b"not the real archive")
    with pytest.raises(DownloadError, match="downloaded but its MD5 is not 6cd6e144f989b92b3379bac3b3de84fd"):
        download_voc(tmp_path / "data", "2012", mirror=base_url)
    assert not (tmp_path / "data" / "VOCtrainval_11-May-2012.tar").exists()


def test_archive_without_the_expected_contents(tmp_path, server, monkeypatch):
    base_url, www = server
    with tarfile.open(www / "VOCtrainval_11-May-2012.tar", "w") as tar:
        tar.add(__file__, arcname="something_else.py")
    _serve(monkeypatch, www / "VOCtrainval_11-May-2012.tar", "VOCtrainval_11-May-2012.tar")
    with pytest.raises(DownloadError, match="VOC2012/ImageSets/Main/trainval.txt is missing"):
        download_dataset("voc2012", tmp_path / "data", mirror=base_url)


def test_cli_prints_one_clear_line_on_failure(tmp_path, capsys):
    mirror = f"http://127.0.0.1:{_closed_port()}"
    status = retina_main(["data", "download", "voc2007", "--root", str(tmp_path), "--mirror", mirror])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("error: Could not download") and "Traceback" not in err


def test_mirror_that_is_not_a_url(tmp_path):
    with pytest.raises(DownloadError, match=r"Could not download mirrors/VOCtrainval_11-May-2012.tar \(unknown url"):
        download_voc(tmp_path / "data", "2012", mirror="mirrors")


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        download_dataset("imagenet")
    with pytest.raises(ValueError, match="year must be"):
        download_voc(year="2010")
