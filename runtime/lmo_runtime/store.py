"""Fetch checkpoints and publish artifacts: file://, plain paths, pvc://, https://, s3://.

* `fetch(uri, dest)` materialises a checkpoint directory under `dest` (archives
  `.tar.gz/.tgz/.tar/.zip` are unpacked safely, never outside `dest`).
* `put(src_dir, uri)` publishes an artifact directory atomically: locally it is copied to a
  hidden sibling and renamed into place; on S3 every file is uploaded first and
  `manifest.json` last, so `exists(uri)` (which looks for the manifest) never sees a partial
  artifact.
* `pvc://CLAIM/PATH` is a path on a mounted PersistentVolumeClaim: the conversion Job and the
  Triton init container mount claim CLAIM at `$LMO_PVC_ROOT/CLAIM` (default `/mnt/pvc`).
* `https://host/dir/` is a directory: the files listed in `dir/lmo-files.txt` (one relative
  path a line) when present, else the links of its HTML index page (what `python -m
  http.server` and nginx autoindex serve). An `Authorization` header comes from env
  `HTTP_AUTHORIZATION` (never logged).
* `s3://bucket/prefix/`: boto3 with credentials, region and endpoint from the environment
  (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
  `AWS_ENDPOINT_URL` for MinIO and friends).

`python -m lmo_runtime.store pull URI DEST` is what the Triton pod's init container runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from lmo_runtime.errors import ConversionError

MANIFEST_FILE = "manifest.json"
# What an artifact directory holds (manifest.REPOSITORY_DIR, convert.SOURCE_FILE in a cache
# entry): only such a directory may be replaced when an artifact is published over it.
ARTIFACT_ENTRIES = frozenset({MANIFEST_FILE, "model_repository", ".lmo-source.json"})
INDEX_FILE = "lmo-files.txt"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEFAULT_PVC_ROOT = "/mnt/pvc"
CHUNK = 1 << 20


class StoreError(ConversionError):
    """A URI that cannot be read or written; the message names the URI (never credentials)."""


# --------------------------------------------------------------------------- digests


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _visible_files(root: Path) -> list[Path]:
    """Regular files under root, sorted; paths with a component starting with '.' are skipped
    (VCS metadata, hub caches)."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(p)
    return out


def checkpoint_digest(root: Path) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs of a checkpoint directory.

    The same digest `lmo convert --print-digest` prints and `spec.versions[].checkpoint.sha256`
    expects. Hidden files (a leading '.') are ignored.
    """
    root = Path(root)
    h = hashlib.sha256()
    for p in _visible_files(root):
        h.update(f"{p.relative_to(root).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def checkpoint_fingerprint(root: Path) -> str:
    """A cheap stand-in for the digest: sha256 over (relative path, size, mtime) of the same
    files. Equal fingerprints mean nothing was rewritten since (no content is read)."""
    root = Path(root)
    h = hashlib.sha256()
    for p in _visible_files(root):
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- URIs


def scheme(uri: str) -> str:
    s = urlparse(str(uri)).scheme
    return s if s in ("file", "pvc", "https", "http", "s3") else "file"


def local_path(uri: str | Path, env: Mapping[str, str] | None = None) -> Path | None:
    """The filesystem path of a file://, plain-path or pvc:// URI; None for remote ones."""
    uri = str(uri)
    env = os.environ if env is None else env
    s = scheme(uri)
    if s == "file":
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            return Path(unquote(parsed.netloc + parsed.path))
        return Path(uri)
    if s == "pvc":
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StoreError(f"{uri}: a pvc:// URI is pvc://CLAIM/PATH (the claim name is missing)")
        root = Path(env.get("LMO_PVC_ROOT", DEFAULT_PVC_ROOT))
        return root / parsed.netloc / unquote(parsed.path).lstrip("/")
    return None


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _extract(archive: Path, dest: Path) -> None:
    """Unpack an archive into dest, refusing members that would land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                root = dest.resolve()
                for member in zf.namelist():
                    target = (dest / member).resolve()
                    if root not in target.parents and target != root:
                        raise StoreError(f"{archive.name}: member {member!r} escapes the archive")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except tarfile.FilterError as err:
        raise StoreError(f"{archive.name}: unsafe member refused ({err})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise StoreError(f"{archive.name}: not a readable archive ({err})") from None


def _single_top_dir(dest: Path) -> Path:
    """An archive that holds one folder (model/config.json...) means that folder."""
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not (dest / "config.json").exists():
        return entries[0]
    return dest


# --------------------------------------------------------------------------- fetch


def fetch(
    uri: str,
    dest: Path,
    *,
    env: Mapping[str, str] | None = None,
    progress: bool = False,
) -> Path:
    """Materialise the checkpoint (or artifact) at `uri` under `dest`; return its directory."""
    env = dict(os.environ if env is None else env)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    s = scheme(uri)
    if s in ("file", "pvc"):
        src = local_path(uri, env)
        assert src is not None
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
            return dest
        if src.is_file() and _is_archive(src.name):
            _extract(src, dest)
            return _single_top_dir(dest)
        if src.exists():
            raise StoreError(
                f"{uri}: is a single file; point the checkpoint URI at the checkpoint directory "
                f"or at an archive ({', '.join(ARCHIVE_SUFFIXES)})"
            )
        hint = " (is the claim mounted? set LMO_PVC_ROOT)" if s == "pvc" else ""
        raise StoreError(f"{uri}: no such file or directory ({src}){hint}")
    if s in ("https", "http"):
        return _fetch_http(uri, dest, env, progress)
    return _fetch_s3(uri, dest, env, progress)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _http_session(env: Mapping[str, str]):
    import requests

    session = requests.Session()
    if env.get("HTTP_AUTHORIZATION"):
        session.headers["Authorization"] = env["HTTP_AUTHORIZATION"]
    return session


def _download(session, url: str, target: Path, progress: bool) -> None:
    import requests

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with session.get(url, stream=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise StoreError(f"{url}: HTTP {resp.status_code} (check the URI and secretRef)")
            total = int(resp.headers.get("content-length") or 0)
            tmp = target.with_name(f".{target.name}.part")
            with open(tmp, "wb") as f, _Bar(progress, target.name, total) as advance:
                for chunk in resp.iter_content(CHUNK):
                    f.write(chunk)
                    advance(len(chunk))
            tmp.rename(target)
    except requests.RequestException as err:
        raise StoreError(f"{url}: download failed ({type(err).__name__})") from None


class _Bar:
    """A rich progress bar for one download (a no-op when progress is off)."""

    def __init__(self, show: bool, name: str, total: int):
        self.show, self.name, self.total = show, name, total

    def __enter__(self):
        if not self.show:
            return lambda n: None
        from rich.markup import escape
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self.progress = Progress(
            *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
            transient=True,
        )
        self.progress.start()
        # the description is markup: a `[...]` in a file name must show as it is
        task = self.progress.add_task(escape(self.name), total=self.total or None)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.show:
            self.progress.stop()


def _http_listing(session, url: str) -> list[str]:
    """Relative file paths of an https directory (index file, else the HTML listing)."""
    resp = session.get(urljoin(url, INDEX_FILE), timeout=60)
    if resp.status_code == 200:
        return [line.strip() for line in resp.text.splitlines() if line.strip() and not line.startswith("#")]
    resp = session.get(url, timeout=60)
    if resp.status_code != 200:
        raise StoreError(f"{url}: HTTP {resp.status_code} (check the URI and secretRef)")
    parser = _Links()
    parser.feed(resp.text)
    out: list[str] = []
    for href in parser.links:
        target = urlparse(urljoin(url, href))
        base = urlparse(url)
        if target.netloc != base.netloc or not target.path.startswith(base.path):
            continue  # parent directory, sorting links, other hosts
        rel = unquote(target.path[len(base.path) :])
        if not rel or rel.startswith(("?", "#", ".")) or target.query:
            continue
        if rel.endswith("/"):
            out += [rel + sub for sub in _http_listing(session, urljoin(url, rel))]
        else:
            out.append(rel)
    return sorted(set(out))


def _fetch_http(uri: str, dest: Path, env: Mapping[str, str], progress: bool) -> Path:
    import requests

    session = _http_session(env)
    try:
        name = Path(urlparse(uri).path).name
        if _is_archive(name):
            archive = dest.parent / f".{dest.name}-{name}"
            _download(session, uri, archive, progress)
            try:
                _extract(archive, dest)
            finally:
                archive.unlink(missing_ok=True)
            return _single_top_dir(dest)
        base = uri if uri.endswith("/") else uri + "/"
        files = _http_listing(session, base)
    except requests.RequestException as err:
        raise StoreError(f"{uri}: cannot read ({type(err).__name__})") from None
    if not files:
        raise StoreError(f"{uri}: the directory lists no files (serve an index or {INDEX_FILE})")
    for rel in files:
        target = (dest / rel).resolve()
        if dest.resolve() not in target.parents:
            raise StoreError(f"{uri}: listed path {rel!r} escapes the directory")
        _download(session, urljoin(base, rel), target, progress)
    return dest


def _s3_split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise StoreError(f"{uri}: an s3 URI is s3://BUCKET/PREFIX/ (the bucket is missing)")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client(env: Mapping[str, str]):
    """A boto3 S3 client configured only from `env` (credentials are never logged)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    return session.client("s3", endpoint_url=env.get("AWS_ENDPOINT_URL") or None)


def _s3_errors(uri: str):
    from botocore.exceptions import BotoCoreError, ClientError

    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, et, ev, tb):
            if isinstance(ev, ClientError):
                code = ev.response.get("Error", {}).get("Code", "?")
                raise StoreError(
                    f"{uri}: S3 error {code} (check the bucket, prefix and the credentials "
                    "in secretRef / AWS_* env)"
                ) from None
            if isinstance(ev, BotoCoreError):
                raise StoreError(f"{uri}: S3 unreachable ({type(ev).__name__}: {ev})") from None
            return False

    return _Ctx()


def _fetch_s3(uri: str, dest: Path, env: Mapping[str, str], progress: bool) -> Path:
    bucket, prefix = _s3_split(uri)
    client = s3_client(env)
    with _s3_errors(uri):
        if _is_archive(prefix):
            archive = dest.parent / f".{dest.name}-{Path(prefix).name}"
            client.download_file(bucket, prefix, str(archive))
            try:
                _extract(archive, dest)
            finally:
                archive.unlink(missing_ok=True)
            return _single_top_dir(dest)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        if not keys:
            raise StoreError(f"{uri}: no objects under this prefix (check the bucket and prefix)")
        with _Bar(progress, f"s3://{bucket}/{prefix}", len(keys)) as advance:
            for k in sorted(keys):
                target = (dest / k[len(prefix) :]).resolve()
                if dest.resolve() not in target.parents:
                    raise StoreError(f"{uri}: object key {k!r} escapes the prefix")
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, k, str(target))
                advance(1)
    return dest


# --------------------------------------------------------------------------- put / exists


def check_replaceable(target: Path, flag: str) -> None:
    """Refuse to publish at `target` unless it is absent, an empty directory or an artifact.

    Publishing renames the old directory aside and deletes it, so a `target` that holds
    anything else (a checkpoint, a home directory, a typo'd path) would be lost: it is
    refused before any work, naming `flag` (the option or URI the user gave) and the fix.
    """
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise ConversionError(
            f"{flag} {target} exists and is not a directory; publishing there would delete "
            f"it. Choose a new or empty directory for {flag}"
        )
    names = sorted(p.name for p in target.iterdir())
    if not names:
        return
    others = [n for n in names if n not in ARTIFACT_ENTRIES]
    if others or MANIFEST_FILE not in names:
        shown = ", ".join((others or names)[:5]) + (", ..." if len(others or names) > 5 else "")
        raise ConversionError(
            f"{flag} {target} already exists and is not an lmo artifact (it holds {shown}); "
            "publishing would delete it. Choose a new or empty directory for "
            f"{flag}, or remove the directory yourself if its content is not needed"
        )


def staging_dir(target: Path) -> Path:
    """A new hidden sibling of `target` to build an artifact in before swap_into()."""
    return target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")


def swap_into(stage: Path, target: Path) -> None:
    """Rename the complete directory `stage` into place as `target`.

    An existing `target` is first renamed aside to a hidden sibling and deleted only once
    `stage` is in place, so `target` is never half written. Callers check with
    check_replaceable() that `target` may be replaced.
    """
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
        stage.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(target)


def put(src_dir: Path, uri: str, *, env: Mapping[str, str] | None = None) -> str:
    """Publish the artifact directory `src_dir` at `uri`, manifest last; return the URI.

    A local target that exists must be an earlier artifact (or empty): see check_replaceable.
    """
    env = dict(os.environ if env is None else env)
    src_dir = Path(src_dir)
    s = scheme(uri)
    if s in ("file", "pvc"):
        target = local_path(uri, env)
        assert target is not None
        check_replaceable(target, uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = staging_dir(target)
        shutil.copytree(src_dir, stage, ignore=shutil.ignore_patterns(MANIFEST_FILE))
        if (src_dir / MANIFEST_FILE).exists():
            shutil.copy2(src_dir / MANIFEST_FILE, stage / MANIFEST_FILE)
        swap_into(stage, target)
        return uri
    if s == "s3":
        bucket, prefix = _s3_split(uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        client = s3_client(env)
        files = [p for p in sorted(src_dir.rglob("*")) if p.is_file()]
        files.sort(key=lambda p: p.name == MANIFEST_FILE)  # manifest last
        with _s3_errors(uri):
            for p in files:
                client.upload_file(str(p), bucket, prefix + p.relative_to(src_dir).as_posix())
        return uri
    raise StoreError(f"{uri}: artifacts can be published to file://, pvc:// or s3:// only")


def exists(uri: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Whether a complete artifact (its manifest) is at `uri`."""
    env = dict(os.environ if env is None else env)
    s = scheme(uri)
    if s in ("file", "pvc"):
        path = local_path(uri, env)
        return path is not None and (path / MANIFEST_FILE).is_file()
    if s == "s3":
        from botocore.exceptions import ClientError

        bucket, prefix = _s3_split(uri)
        key = (prefix.rstrip("/") + "/" if prefix else "") + MANIFEST_FILE
        try:
            s3_client(env).head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"{uri}: S3 error {err.response['Error'].get('Code')}") from None
    return False


def read_manifest(uri: str, *, env: Mapping[str, str] | None = None) -> str | None:
    """The text of `<uri>/manifest.json`, or None when there is no complete artifact there."""
    env = dict(os.environ if env is None else env)
    s = scheme(uri)
    if s in ("file", "pvc"):
        path = local_path(uri, env)
        f = None if path is None else path / MANIFEST_FILE
        return f.read_text() if f is not None and f.is_file() else None
    if s == "s3":
        from botocore.exceptions import ClientError

        bucket, prefix = _s3_split(uri)
        key = (prefix.rstrip("/") + "/" if prefix else "") + MANIFEST_FILE
        try:
            body = s3_client(env).get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreError(f"{uri}: S3 error {err.response['Error'].get('Code')}") from None
        return body.decode()
    return None


STORE_PREFIX = "LMO_STORE_"


def store_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to publish artifacts with.

    When the checkpoint and the artifact store use different Secrets, the conversion Job gets
    the store's keys prefixed with LMO_STORE_ (LMO_STORE_AWS_ACCESS_KEY_ID...); they override
    the checkpoint's AWS_* for publishing only.
    """
    env = dict(os.environ if env is None else env)
    overrides = {k[len(STORE_PREFIX):]: v for k, v in env.items() if k.startswith(STORE_PREFIX)}
    if overrides:
        env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        env.update(overrides)
    return env


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """`python -m lmo_runtime.store pull URI DEST | put SRC URI | digest DIR`."""
    parser = argparse.ArgumentParser(prog="python -m lmo_runtime.store")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pull", help="copy an artifact or checkpoint to a local directory")
    p.add_argument("uri")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("put", help="publish a local artifact directory (manifest last)")
    p.add_argument("src", type=Path)
    p.add_argument("uri")
    p = sub.add_parser("digest", help="print the checkpoint digest of a directory")
    p.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "pull":
            got = fetch(args.uri, args.dest, progress=sys.stderr.isatty())
            if got != args.dest:  # an archive with a top folder: move its content up
                for child in list(got.iterdir()):
                    child.rename(args.dest / child.name)
                got.rmdir()
            print(args.dest)
        elif args.cmd == "put":
            print(put(args.src, args.uri, env=store_env()))
        else:
            print(checkpoint_digest(args.dir))
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
