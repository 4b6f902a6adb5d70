"""Fetch and publish through every store scheme: paths, file://, pvc://, https://, s3:// (moto)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import tarfile
import threading

import pytest

from lmo_runtime import store
from lmo_runtime.errors import ConversionError


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def artifact(tmp_path):
    a = tmp_path / "artifact"
    (a / "model_repository/m/1").mkdir(parents=True)
    (a / "model_repository/m/1/model.onnx").write_bytes(b"\x00" * 1000)
    (a / "model_repository/m/config.pbtxt").write_text('name: "m"\n')
    (a / "manifest.json").write_text('{"accepted": true}')
    return a


def test_digest_is_content_based(tiny_bert_classifier, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert_classifier, copy)
    (copy / ".gitattributes").write_text("ignored")
    assert store.checkpoint_digest(copy) == store.checkpoint_digest(tiny_bert_classifier)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert store.checkpoint_digest(copy) != store.checkpoint_digest(tiny_bert_classifier)


def test_pvc_put_is_atomic_and_pull_cli(artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("LMO_PVC_ROOT", str(tmp_path / "mnt"))
    uri = "pvc://claim/store/abc"
    assert not store.exists(uri)
    store.put(artifact, uri)
    assert store.exists(uri) and _tree(tmp_path / "mnt/claim/store/abc") == _tree(artifact)
    assert not [p for p in (tmp_path / "mnt/claim/store").iterdir() if p.name.startswith(".")]
    out = subprocess.run(
        [sys.executable, "-m", "lmo_runtime.store", "pull", uri, str(tmp_path / "pulled")],
        capture_output=True, text=True, env={**__import__("os").environ},
    )
    assert out.returncode == 0, out.stderr
    assert _tree(tmp_path / "pulled") == _tree(artifact)


def test_missing_paths_and_bad_uris_are_clear(tmp_path):
    with pytest.raises(ConversionError, match="no such file or directory"):
        store.fetch(f"file://{tmp_path}/nope", tmp_path / "d")
    with pytest.raises(ConversionError, match="CLAIM"):
        store.fetch("pvc:///path", tmp_path / "d")
    with pytest.raises(ConversionError, match="is set|LMO_PVC_ROOT"):
        store.fetch("pvc://claim/missing", tmp_path / "d", env={"LMO_PVC_ROOT": str(tmp_path)})


def test_archives_unpack_safely(tiny_bert_classifier, tmp_path):
    archive = tmp_path / "ckpt.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tiny_bert_classifier, arcname="model")
    got = store.fetch(str(archive), tmp_path / "x")
    assert store.checkpoint_digest(got) == store.checkpoint_digest(tiny_bert_classifier)
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 0
        tf.addfile(info)
    with pytest.raises(ConversionError, match="unsafe member refused"):
        store.fetch(str(evil), tmp_path / "y")
    assert not (tmp_path / "escape.txt").exists()


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, *a):
            pass

    handler.log_message = lambda *a: None
    server = Quiet(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_https_directory_listing_and_archive(http_root, tiny_bert_classifier, tmp_path):
    root, base = http_root
    shutil.copytree(tiny_bert_classifier, root / "model")
    (root / "model/extra").mkdir()
    (root / "model/extra/note.txt").write_text("nested files are fetched too")
    got = store.fetch(f"{base}/model/", tmp_path / "a")
    assert _tree(got) == _tree(root / "model")
    assert store.checkpoint_digest(got) == store.checkpoint_digest(root / "model")
    with tarfile.open(root / "model.tgz", "w:gz") as tf:
        tf.add(tiny_bert_classifier, arcname="m")
    got = store.fetch(f"{base}/model.tgz", tmp_path / "b")
    assert store.checkpoint_digest(got) == store.checkpoint_digest(tiny_bert_classifier)
    with pytest.raises(ConversionError, match="HTTP 404"):
        store.fetch(f"{base}/nothing/", tmp_path / "c")


@pytest.fixture(scope="module")
def s3_env(moto_s3):
    client = store.s3_client(moto_s3)
    client.create_bucket(Bucket="models")
    client.create_bucket(Bucket="artifacts")
    return moto_s3


def test_store_env_prefers_store_credentials():
    env = {"AWS_ACCESS_KEY_ID": "ckpt", "AWS_SECRET_ACCESS_KEY": "ckpt-secret",
           "AWS_ENDPOINT_URL": "http://ckpt", "LMO_STORE_AWS_ACCESS_KEY_ID": "store",
           "LMO_STORE_AWS_SECRET_ACCESS_KEY": "store-secret", "PATH": "/bin"}
    got = store.store_env(env)
    assert got["AWS_ACCESS_KEY_ID"] == "store" and got["AWS_SECRET_ACCESS_KEY"] == "store-secret"
    assert "AWS_ENDPOINT_URL" not in got and got["PATH"] == "/bin"
    assert store.store_env({"AWS_ACCESS_KEY_ID": "a"}) == {"AWS_ACCESS_KEY_ID": "a"}


def test_s3_checkpoint_to_s3_artifact(s3_env, tiny_bert_classifier, tmp_path, monkeypatch):
    from lmo_runtime import cli

    client = store.s3_client(s3_env)
    for p in tiny_bert_classifier.rglob("*"):
        if p.is_file():
            client.upload_file(str(p), "models", f"tiny/v1/{p.relative_to(tiny_bert_classifier)}")
    got = store.fetch("s3://models/tiny/v1/", tmp_path / "ckpt", env=s3_env)
    assert store.checkpoint_digest(got) == store.checkpoint_digest(tiny_bert_classifier)

    uri = "s3://artifacts/store/tiny-v1/"
    assert not store.exists(uri, env=s3_env)
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    argv = ["s3://models/tiny/v1/", "--task", "text-classification", "--out", uri,
            "--no-cache", "--quiet", "--backend", "python"]
    assert cli.main(argv) == 0
    assert store.exists(uri, env=s3_env)

    # a retried Job finds the published artifact and does not convert again
    def no_convert(*a, **k):
        raise AssertionError("converted although the artifact is published")

    monkeypatch.setattr("lmo_runtime.convert.convert", no_convert)
    assert cli.main(argv) == 0
    pulled = store.fetch(uri, tmp_path / "pulled", env=s3_env)
    assert (pulled / "model_repository/text_classification/1/model.onnx").is_file()
    with pytest.raises(ConversionError, match="no objects under this prefix"):
        store.fetch("s3://models/absent/", tmp_path / "none", env=s3_env)
    with pytest.raises(ConversionError, match="S3 error"):
        store.fetch("s3://no-such-bucket/x/", tmp_path / "none2", env=s3_env)


def test_https_index_file_and_authorization(tiny_bert_classifier, tmp_path):
    """A server that needs a token: the index file drives the download, the token is sent,
    and a refusal names the URI and the fix, never the token."""
    root = tmp_path / "www"
    shutil.copytree(tiny_bert_classifier, root / "ckpt")
    names = sorted(p.name for p in (root / "ckpt").iterdir())
    (root / "ckpt" / store.INDEX_FILE).write_text("\n".join(names) + "\n")
    token = "Bearer s3cr3t-token"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def do_GET(self):
            if self.headers.get("Authorization") != token:
                self.send_error(401)
                return
            super().do_GET()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/ckpt/"
    try:
        got = store.fetch(base, tmp_path / "a", env={"HTTP_AUTHORIZATION": token})
        assert sorted(p.name for p in got.iterdir()) == names
        with pytest.raises(ConversionError) as err:
            store.fetch(base, tmp_path / "b", env={"HTTP_AUTHORIZATION": "Bearer wrong"})
        assert "HTTP 401" in str(err.value) and "secretRef" in str(err.value)
        assert "wrong" not in str(err.value)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
