"""Train and predict straight from s3:// (a moto server on 127.0.0.1, started here, via tools/local_s3.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "local_s3.py"


def _tool():
    spec = importlib.util.spec_from_file_location("local_s3", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    from bioloop.data.synthetic import make_em_dataset

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():
            mp.setenv(name, value)
        folder = tmp_path_factory.mktemp("s3src") / "data"
        data = make_em_dataset(folder, shape=(2, 96, 144))
        tool = _tool()
        tool.s3_datasplit(Path(data.datasplit_path), folder, folder / "datasplit_s3.csv")
        server, url = tool.start(folder)
        try:
            yield {"url": url, "folder": folder, "data": data, "csv": folder / "datasplit_s3.csv"}
        finally:
            server.stop()


def test_train_and_predict_from_s3(bucket, tmp_path, monkeypatch):
    from bioloop import api
    from bioloop.data.ngff import open_volume

    monkeypatch.chdir(tmp_path)
    assert "s3://bioloop-demo/data/" in bucket["csv"].read_text()
    config = tmp_path / "s3.py"
    config.write_text(
        f"datasplit_path = {str(bucket['csv'])!r}\n"
        f"storage_options = {{'endpoint_url': {bucket['url']!r}, 'key': 'testing', 'secret': 'testing'}}\n"
        "classes = ['nuc', 'mito']\ninput_array_info = {'shape': (1, 32, 32), 'scale': (8, 8, 8)}\n"
        "model_kwargs = {'depth': 2, 'base_channels': 4}\nbatch_size = 2\nepochs = 1\niterations_per_epoch = 2\n"
        "validation_batch_limit = 1\n")
    result = api.train(str(config), quiet=True)
    assert result["epochs_completed"] == 1
    raw_url = "s3://bioloop-demo/data/synthetic_em.zarr/recon-1/em/fibsem-uint8"
    out = api.predict(str(config), input=raw_url, output=str(tmp_path / "pred.zarr"), show_progress=False)
    pred = open_volume(f"{out}/nuc")
    local = open_volume(bucket["data"].raw_path)
    assert pred.spatial_shape == local.spatial_shape and pred.translation == local.translation
    values = pred.read((0, 0, 0), pred.spatial_shape)
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    # process and evaluate: the truth crop is read from the bucket too
    labels = api.process(str(config), input=str(out), output=str(tmp_path / "labels.zarr"), show_progress=False)
    crop_url = bucket["data"].test_crop_path.replace(str(bucket["folder"].absolute()), "s3://bioloop-demo/data")
    assert crop_url.startswith("s3://")
    remote = api.evaluate(str(config), prediction=str(labels), truth=crop_url, show_progress=False)
    local_scores = api.evaluate(str(config), prediction=str(labels), truth=bucket["data"].test_crop_path,
                                show_progress=False)
    assert remote["classes"] == ["nuc", "mito"] and remote["scores"] == local_scores["scores"]


def test_wrong_credentials_name_the_url(bucket, tmp_path):
    from bioloop.data.sources import open_image
    from bioloop.errors import DataError

    with pytest.raises(DataError, match="s3://bioloop-demo/nope.zarr"):
        open_image("s3://bioloop-demo/nope.zarr", storage_options={"endpoint_url": bucket["url"]})
