"""Serve a folder as a local S3 bucket (moto), for examples/segmentation_s3.py.

    .venv/bin/python tools/local_s3.py data --port 5555      # uploads ./data to s3://bioloop-demo/data

Generates the synthetic EM dataset into the folder first when it has none, uploads it to a
moto server on 127.0.0.1, writes ``data/datasplit_s3.csv`` whose paths are s3:// URLs, and
serves until Ctrl-C. Nothing leaves this machine. Needs the test extra (moto[server], s3fs).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

BUCKET = "bioloop-demo"


def start(folder: Path, port: int = 0):
    """Start moto, upload ``folder`` to s3://bioloop-demo/<folder name>; returns (server, endpoint URL)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                        "NO_PROXY": "127.0.0.1,localhost"}.items():
        os.environ.setdefault(name, value)
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)  # no LocationConstraint: moto rejects it
    fs = s3fs.S3FileSystem(endpoint_url=url, skip_instance_cache=True)
    fs.put(str(folder), f"{BUCKET}/{folder.name}", recursive=True)
    return server, url


def s3_datasplit(local_csv: Path, folder: Path, out_csv: Path) -> None:
    """Rewrite a local datasplit so that its paths point into the bucket."""
    from bioloop.data.datasplit import CropEntry, read_datasplit, write_datasplit

    local = str(folder.absolute())
    remote = f"s3://{BUCKET}/{folder.name}"
    entries = [CropEntry(e.usage, e.raw_path.replace(local, remote), e.gt_path.replace(local, remote), e.classes)
               for e in read_datasplit(local_csv)]
    write_datasplit(out_csv, entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=5555)
    args = parser.parse_args()
    folder = args.folder.absolute()
    if not (folder / "datasplit.csv").exists():
        from bioloop.data.synthetic import make_em_dataset

        make_em_dataset(folder)
    s3_datasplit(folder / "datasplit.csv", folder, folder / "datasplit_s3.csv")
    server, url = start(folder, args.port)
    print(f"serving s3://{BUCKET}/{folder.name} at {url}; datasplit: {folder / 'datasplit_s3.csv'}  (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
