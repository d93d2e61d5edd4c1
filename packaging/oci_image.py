#!/usr/bin/env python3
"""Reproducible OCI image writer for hatchway (packaging.md section 3). Stdlib only.

Writes an OCI image layout directory with one gzip layer and, optionally, one
tarball that is both an oci-archive and a docker-save archive.  Every timestamp
comes from SOURCE_DATE_EPOCH (default 0), so equal inputs give equal bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import time

WRITER = "hatchway packaging/oci_image.py"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
CA_PATH = "etc/ssl/certs/ca-certificates.crt"
PASSWD = (
    b"root:x:0:0:root:/root:/sbin/nologin\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def compact(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class Entry:
    __slots__ = ("path", "is_dir", "mode", "uid", "gid", "data")

    def __init__(self, path, is_dir, mode, uid=0, gid=0, data=b""):
        self.path, self.is_dir, self.mode = path, is_dir, mode
        self.uid, self.gid, self.data = uid, gid, data


def norm(dest: str) -> str:
    path = dest.lstrip("/").rstrip("/")
    while path.startswith("./"):
        path = path[2:]
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"bad path in image: {dest!r}")
    return path


def layer_tar(entries: list[Entry], epoch: int) -> bytes:
    """The uncompressed layer: PAX tar, sorted, auto parents 0755 root, fixed metadata."""
    table = {e.path: e for e in entries}
    for e in entries:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            table.setdefault(parent, Entry(parent, True, 0o755))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(table):
            e = table[path]
            info = tarfile.TarInfo(path + "/" if e.is_dir else path)
            info.type = tarfile.DIRTYPE if e.is_dir else tarfile.REGTYPE
            info.mode, info.uid, info.gid = e.mode, e.uid, e.gid
            info.uname = info.gname = ""
            info.mtime = epoch
            info.size = 0 if e.is_dir else len(e.data)
            tar.addfile(info, None if e.is_dir else io.BytesIO(e.data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    # Level 9, header MTIME 0, no file name field (compressing from memory).
    return gzip.compress(data, compresslevel=9, mtime=0)


def image_config(args, diff_id: str, epoch: int) -> bytes:
    cfg = {"WorkingDir": args.workdir}
    if args.entrypoint:
        cfg["Entrypoint"] = list(args.entrypoint)
    if args.cmd:
        cfg["Cmd"] = list(args.cmd)
    if args.env:
        cfg["Env"] = list(args.env)
    if args.user:
        cfg["User"] = args.user
    if args.expose:
        cfg["ExposedPorts"] = {p if "/" in p else p + "/tcp": {} for p in args.expose}
    if args.label:
        labels = {}
        for item in args.label:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"oci_image: --label needs K=V, got {item!r}")
            labels[key] = value
        cfg["Labels"] = labels
    created = rfc3339(epoch)
    return compact({
        "architecture": args.arch,
        "config": cfg,
        "created": created,
        "history": [{"created": created, "created_by": WRITER}],
        "os": "linux",
        "rootfs": {"diff_ids": [diff_id], "type": "layers"},
    })


def manifest(config: bytes, layer_digest: str, layer_size: int, layer_type: str) -> bytes:
    return compact({
        "config": {"digest": digest(config), "mediaType": MT_CONFIG, "size": len(config)},
        "layers": [{"digest": layer_digest, "mediaType": layer_type, "size": layer_size}],
        "mediaType": MT_MANIFEST,
        "schemaVersion": 2,
    })


def index_entry(man: bytes, ref: str) -> dict:
    return {"annotations": {REF_NAME: ref}, "digest": digest(man), "mediaType": MT_MANIFEST, "size": len(man)}


def index_json(entries: list[dict]) -> bytes:
    return compact({"manifests": entries, "mediaType": MT_INDEX, "schemaVersion": 2})


def write_layout(layout: str, tag: str, blobs: list[bytes], man: bytes) -> None:
    blob_dir = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blob_dir, exist_ok=True)
    for blob in blobs:
        path = os.path.join(blob_dir, hashlib.sha256(blob).hexdigest())
        if not os.path.exists(path) or os.path.getsize(path) != len(blob):
            with open(path + ".part", "wb") as f:
                f.write(blob)
            os.replace(path + ".part", path)
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(OCI_LAYOUT)
    index_path = os.path.join(layout, "index.json")
    entries = []
    if os.path.exists(index_path):
        with open(index_path, "rb") as f:
            old = json.load(f)
        entries = [m for m in old.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) != tag]
    entries.append(index_entry(man, tag))
    with open(index_path, "wb") as f:
        f.write(index_json(entries))


def write_archive(path: str, epoch: int, ref: str, layer: bytes, config: bytes, man: bytes) -> None:
    def info(name: str, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        ti.mode = 0o755 if is_dir else 0o644
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mtime = epoch
        ti.size = size
        return ti

    config_name = "blobs/sha256/" + hashlib.sha256(config).hexdigest()
    layer_name = "blobs/sha256/" + hashlib.sha256(layer).hexdigest()
    docker_manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]).encode()
    members = {
        layer_name: layer,
        config_name: config,
        "blobs/sha256/" + hashlib.sha256(man).hexdigest(): man,
        "index.json": index_json([index_entry(man, ref)]),
        "manifest.json": docker_manifest,
        "oci-layout": OCI_LAYOUT,
    }
    tmp = path + ".part"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info("blobs/", True))
        tar.addfile(info("blobs/sha256/", True))
        for name in sorted(members):
            data = members[name]
            tar.addfile(info(name, False, len(data)), io.BytesIO(data))
    os.replace(tmp, path)


def parse_add(value: str) -> Entry:
    parts = value.split(":")
    mode = 0o755
    if len(parts) >= 3 and parts[-1] and all(c in "01234567" for c in parts[-1]):
        mode = int(parts.pop(), 8)
    if len(parts) < 2:
        raise SystemExit(f"oci_image: --add needs SRC:DEST[:MODE], got {value!r}")
    dest, src = parts[-1], ":".join(parts[:-1])
    with open(src, "rb") as f:
        data = f.read()
    return Entry(norm(dest), False, mode, data=data)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oci_image.py", description=__doc__.splitlines()[0])
    p.add_argument("--layout", required=True, help="output OCI layout directory")
    p.add_argument("--tag", default="latest", help="ref name in the layout's index.json")
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST[:MODE]",
                   help="put host file SRC at DEST in the layer with octal MODE (default 0755)")
    p.add_argument("--tmp", action="store_true", help="add tmp/ with mode 1777")
    p.add_argument("--passwd", action="store_true", help="add etc/passwd, etc/group and home/nonroot")
    p.add_argument("--cacerts", metavar="FILE", help="install FILE as " + CA_PATH)
    p.add_argument("--entrypoint", action="append", default=[], help="config Entrypoint (repeatable)")
    p.add_argument("--cmd", action="append", default=[], help="config Cmd (repeatable; --cmd=--flag)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="config Env (repeatable)")
    p.add_argument("--user", help="config User")
    p.add_argument("--workdir", default="/", help="config WorkingDir")
    p.add_argument("--expose", action="append", default=[], metavar="P/proto", help="config ExposedPorts")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="config Labels")
    p.add_argument("--arch", default="amd64", help="config architecture")
    p.add_argument("--archive", metavar="FILE", help="also write the combined docker/oci archive")
    p.add_argument("--repo-tag", metavar="NAME:TAG", help="RepoTags entry and archive ref [image:<tag>]")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    try:
        epoch = int(raw) if raw else 0
    except ValueError:
        raise SystemExit(f"oci_image: SOURCE_DATE_EPOCH must be an integer, got {raw!r}")

    entries = [parse_add(a) for a in args.add]
    if args.tmp:
        entries.append(Entry("tmp", True, 0o1777))
    if args.passwd:
        entries += [
            Entry("etc/passwd", False, 0o644, data=PASSWD),
            Entry("etc/group", False, 0o644, data=GROUP),
            Entry("home/nonroot", True, 0o700, 65532, 65532),
        ]
    if args.cacerts:
        with open(args.cacerts, "rb") as f:
            entries.append(Entry(CA_PATH, False, 0o644, data=f.read()))
    seen = set()
    for e in entries:
        if e.path in seen:
            raise SystemExit(f"oci_image: {e.path} given twice")
        seen.add(e.path)

    layer = layer_tar(entries, epoch)
    diff_id = digest(layer)
    layer_gz = gzip_bytes(layer)
    config = image_config(args, diff_id, epoch)
    man = manifest(config, digest(layer_gz), len(layer_gz), MT_LAYER_GZ)
    write_layout(args.layout, args.tag, [layer_gz, config, man], man)
    print(f"layout {args.layout}:{args.tag} manifest {digest(man)} layer {digest(layer_gz)} "
          f"({len(layer_gz)} bytes gzip)")
    if args.archive:
        ref = args.repo_tag or f"image:{args.tag}"
        arch_man = manifest(config, diff_id, len(layer), MT_LAYER)
        write_archive(args.archive, epoch, ref, layer, config, arch_man)
        print(f"archive {args.archive} {ref} manifest {digest(arch_man)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
