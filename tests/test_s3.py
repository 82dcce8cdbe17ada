"""Reading OME-NGFF groups, plain zarr arrays and tifs from S3, against a local moto server."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tifffile
import zarr

from bioloop.data.ngff import open_volume, write_volume
from bioloop.data.resample import ResampledVolume
from bioloop.data.sources import exists, open_image
from bioloop.errors import DataError

boto3 = pytest.importorskip("boto3")
s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "bioloop-test"
DATA = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """A moto S3 server on a free local port holding the test data; yields its URL."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
            _upload(url, tmp_path_factory.mktemp("s3-upload"))
            yield url
        finally:
            server.stop()


def _upload(url: str, local) -> None:
    write_volume(local / "v3.zarr", DATA, scale=(8, 4, 4), translation=(10, 20, 30), levels=2, zarr_format=3)
    write_volume(local / "v2.zarr", DATA, scale=(8, 4, 4), translation=(10, 20, 30), levels=2, zarr_format=2)
    plain = zarr.create_array(local / "plain.zarr", shape=(3, 5), dtype="int32", chunks=(2, 2), zarr_format=2)
    plain[...] = np.arange(15).reshape(3, 5)
    tifffile.imwrite(local / "cell.ome.tif", DATA, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 8, "PhysicalSizeZUnit": "nm"})
    # public-read objects, so that anonymous reads work too
    fs = s3fs.S3FileSystem(endpoint_url=url, skip_instance_cache=True, s3_additional_kwargs={"ACL": "public-read"})
    for name in ("v3.zarr", "v2.zarr", "plain.zarr"):
        fs.put(str(local / name), f"{BUCKET}/data/{name}", recursive=True)
    fs.put(str(local / "cell.ome.tif"), f"{BUCKET}/data/cell.ome.tif")


@pytest.mark.parametrize("name", ["v3.zarr", "v2.zarr"])
def test_ngff_round_trip(endpoint, name):
    url = f"s3://{BUCKET}/data/{name}"
    vol = open_image(url, storage_options={"endpoint_url": endpoint})
    np.testing.assert_array_equal(vol.array[...], DATA)
    assert (vol.scale, vol.translation, vol.path) == ((8, 4, 4), (10, 20, 30), f"{url}/s0")
    # key/secret with the endpoint inside client_kwargs, as s3fs documents it
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
    s1 = open_image(url, (16, 8, 8), storage_options=options)
    assert s1.translation == (14, 22, 32) and s1.read((0, 0, 0), (1, 1, 1))[0, 0, 0] == round(
        DATA[:2, :2, :2].mean())
    view = open_image(url, (8, 2, 2), storage_options=options)  # no such level: a resampled view
    assert isinstance(view, ResampledVolume) and view.read((1, 0, 0), (1, 1, 2))[0, 0].tolist() == [48, 48]


def test_anonymous_access(endpoint):
    vol = open_volume(f"s3://{BUCKET}/data/v3.zarr", storage_options={"anon": True, "endpoint_url": endpoint})
    np.testing.assert_array_equal(vol.read((1, 2, 3), (1, 1, 2))[0, 0], DATA[1, 2, 3:5])


def test_plain_zarr_v2_array(endpoint):
    vol = open_image(f"s3://{BUCKET}/data/plain.zarr", (6, 3), storage_options={"endpoint_url": endpoint})
    assert vol.scale == (6.0, 3.0) and vol.axes == ("y", "x")
    np.testing.assert_array_equal(vol.array[...], np.arange(15).reshape(3, 5))


def test_remote_tif(endpoint):
    vol = open_image(f"s3://{BUCKET}/data/cell.ome.tif", storage_options={"endpoint_url": endpoint})
    assert vol.scale == (8.0, 1.0, 1.0)  # the file gives z only; y/x fall back to 1 nm
    np.testing.assert_array_equal(vol.array[...], DATA)


def test_exists_and_missing_keys(endpoint):
    options = {"endpoint_url": endpoint}
    assert exists(f"s3://{BUCKET}/data/v3.zarr", options) and exists(f"s3://{BUCKET}/data/v2.zarr/s1", options)
    assert not exists(f"s3://{BUCKET}/data/missing.zarr", options)
    url = f"s3://{BUCKET}/data/missing.zarr"
    with pytest.raises(DataError) as err:
        open_image(url, storage_options=options)
    assert str(err.value).startswith(f"{url}: no zarr array or group here; check the path")
    with pytest.raises(DataError, match=r"missing.ome.tif: no such tif file; check the path and storage_options"):
        open_image(f"s3://{BUCKET}/data/missing.ome.tif", storage_options=options)


def test_unreachable_endpoint():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
               "config_kwargs": {"retries": {"max_attempts": 1}}}
    url = f"s3://{BUCKET}/data/v3.zarr"
    with pytest.raises(DataError, match=r"v3.zarr: cannot read the remote path \(EndpointConnectionError.*check the URL"):
        open_image(url, storage_options=options)
