"""packaging/oci_image.py: the reproducible OCI writer (packaging.md section 3,
acceptance cases 16-22)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pkgtest_helpers import OCI_TOOL, require_tool, run, run_oci_tool

EPOCH = 1700000000
CREATED = "2023-11-14T22:13:20Z"
CA = b"-----BEGIN CERTIFICATE-----\nnot a real certificate\n-----END CERTIFICATE-----\n"
PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def compact(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    # Random content, so the gzip layer does not collapse to nothing.
    (d / "app").write_bytes(b"\x7fELF" + os.urandom(200_000))
    (d / "ca.crt").write_bytes(CA)
    (d / "extra.txt").write_bytes(b"extra\n")
    return d


def full_args(inputs: Path, out: Path, tag="0.1.0") -> list[str]:
    return [
        "--layout", out / "oci", "--tag", tag,
        "--add", f"{inputs / 'app'}:/app/prog:0755",
        "--add", f"{inputs / 'extra.txt'}:usr/share/extra.txt:0640",
        "--tmp", "--passwd", "--cacerts", inputs / "ca.crt",
        "--entrypoint", "/app/prog", "--cmd=--host=0.0.0.0", "--cmd=--port=8765",
        "--env", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "--env", "A=b=c",
        "--user", "65532:65532", "--expose", "8765/tcp", "--expose", "53/udp",
        "--label", "org.opencontainers.image.title=prog", "--label", "x=y=z",
        "--archive", out / "prog.tar", "--repo-tag", "hatchway/prog:0.1.0",
    ]


@pytest.fixture(scope="module")
def image(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image")
    proc = run_oci_tool(full_args(inputs, out), epoch=EPOCH)
    (out / "stdout").write_bytes(proc.stdout)
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load_layout(layout: Path, tag: str):
    index = json.loads((layout / "index.json").read_bytes())
    (entry,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    blob = lambda d: (layout / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()  # noqa: E731
    manifest_bytes = blob(entry["digest"])
    manifest = json.loads(manifest_bytes)
    config_bytes = blob(manifest["config"]["digest"])
    layer_gz = blob(manifest["layers"][0]["digest"])
    return entry, manifest_bytes, manifest, config_bytes, json.loads(config_bytes), layer_gz


# ------------------------------------------------------------------ case 16


def test_two_runs_are_byte_identical(inputs, image, tmp_path):
    run_oci_tool(full_args(inputs, tmp_path), epoch=EPOCH)
    first, second = tree(image / "oci"), tree(tmp_path / "oci")
    assert first.keys() == second.keys()
    assert first == second
    assert (image / "prog.tar").read_bytes() == (tmp_path / "prog.tar").read_bytes()


def test_other_epoch_changes_the_digests(inputs, image, tmp_path):
    run_oci_tool(full_args(inputs, tmp_path), epoch=EPOCH + 1)
    assert (image / "oci" / "index.json").read_bytes() != (tmp_path / "oci" / "index.json").read_bytes()
    assert (image / "prog.tar").read_bytes() != (tmp_path / "prog.tar").read_bytes()


# ------------------------------------------------------------------ case 17


def test_layout_blobs_digests_sizes_and_gzip_header(image):
    layout = image / "oci"
    assert (layout / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    blobs = sorted((layout / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    entry, manifest_bytes, manifest, config_bytes, config, layer_gz = load_layout(layout, "0.1.0")
    assert entry["size"] == len(manifest_bytes) and entry["digest"] == sha(manifest_bytes)
    assert manifest["config"]["size"] == len(config_bytes)
    assert manifest["layers"][0]["size"] == len(layer_gz)
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest_bytes == compact(manifest)
    assert config["rootfs"] == {"diff_ids": [sha(gzip.decompress(layer_gz))], "type": "layers"}
    # gzip header: magic, CM=8, FLG=0 (no file name), MTIME=0, XFL=2 (level 9)
    assert layer_gz[:4] == b"\x1f\x8b\x08\x00"
    assert layer_gz[4:8] == b"\x00\x00\x00\x00"
    assert layer_gz[8] == 2
    # the tool reports what it wrote
    out = (image / "stdout").read_text()
    assert f"manifest {entry['digest']}" in out and manifest["layers"][0]["digest"] in out


def test_layer_tar_entries(image):
    *_, layer_gz = load_layout(image / "oci", "0.1.0")
    raw = gzip.decompress(layer_gz)
    assert len(raw) % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert tar.pax_headers == {}
        data = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    raw_names = []
    for off in range(0, len(raw), 512):  # names exactly as stored, directories with '/'
        block = raw[off:off + 512]
        if block[156:157] in (b"0", b"5") and block[257:262] == b"ustar":
            raw_names.append(block[:100].rstrip(b"\0").decode())
    assert raw_names == [
        "app/", "app/prog", "etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/",
        "etc/ssl/certs/ca-certificates.crt", "home/", "home/nonroot/", "tmp/", "usr/", "usr/share/",
        "usr/share/extra.txt",
    ]
    expected = {
        "app": (tarfile.DIRTYPE, 0o755, 0, 0), "app/prog": (tarfile.REGTYPE, 0o755, 0, 0),
        "etc": (tarfile.DIRTYPE, 0o755, 0, 0), "etc/group": (tarfile.REGTYPE, 0o644, 0, 0),
        "etc/passwd": (tarfile.REGTYPE, 0o644, 0, 0), "etc/ssl": (tarfile.DIRTYPE, 0o755, 0, 0),
        "etc/ssl/certs": (tarfile.DIRTYPE, 0o755, 0, 0),
        "etc/ssl/certs/ca-certificates.crt": (tarfile.REGTYPE, 0o644, 0, 0),
        "home": (tarfile.DIRTYPE, 0o755, 0, 0), "home/nonroot": (tarfile.DIRTYPE, 0o700, 65532, 65532),
        "tmp": (tarfile.DIRTYPE, 0o1777, 0, 0), "usr": (tarfile.DIRTYPE, 0o755, 0, 0),
        "usr/share": (tarfile.DIRTYPE, 0o755, 0, 0), "usr/share/extra.txt": (tarfile.REGTYPE, 0o640, 0, 0),
    }
    assert {m.name: (m.type, m.mode, m.uid, m.gid) for m in members} == expected
    for m in members:
        assert (m.mtime, m.uname, m.gname) == (EPOCH, "", ""), m.name
    assert data["etc/passwd"].decode() == PASSWD
    assert data["etc/group"].decode() == GROUP
    assert data["etc/ssl/certs/ca-certificates.crt"] == CA
    assert data["usr/share/extra.txt"] == b"extra\n"
    assert data["app/prog"][:4] == b"\x7fELF" and len(data["app/prog"]) == 200_004


# ------------------------------------------------------------------ case 18


def test_index_tags_are_kept_and_replaced(inputs, tmp_path):
    layout = tmp_path / "oci"
    base = ["--layout", layout, "--add", f"{inputs / 'extra.txt'}:/x"]
    run_oci_tool([*base, "--tag", "one"])
    run_oci_tool([*base, "--tag", "two", "--user", "1:1"])
    index_bytes = (layout / "index.json").read_bytes()
    index = json.loads(index_bytes)
    assert index_bytes == compact(index)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json" and index["schemaVersion"] == 2
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert tags == ["one", "two"]
    old_one = index["manifests"][0]["digest"]
    run_oci_tool([*base, "--tag", "one", "--user", "2:2"])
    index = json.loads((layout / "index.json").read_bytes())
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert tags == ["two", "one"]
    assert index["manifests"][1]["digest"] != old_one
    assert load_layout(layout, "one")[4]["config"]["User"] == "2:2"
    assert load_layout(layout, "two")[4]["config"]["User"] == "1:1"
    # the old blobs stay until `umoci gc`
    assert (layout / "blobs" / "sha256" / old_one.split(":")[1]).exists()


def test_default_tag_is_latest(inputs, tmp_path):
    run_oci_tool(["--layout", tmp_path / "oci", "--add", f"{inputs / 'extra.txt'}:x"])
    load_layout(tmp_path / "oci", "latest")


# ------------------------------------------------------------------ case 21


def test_config_full_shape(image):
    _, manifest_bytes, manifest, config_bytes, config, layer_gz = load_layout(image / "oci", "0.1.0")
    assert config_bytes == compact(config) and not config_bytes.endswith(b"\n")
    assert config == {
        "architecture": "amd64",
        "config": {
            "Cmd": ["--host=0.0.0.0", "--port=8765"],
            "Entrypoint": ["/app/prog"],
            "Env": ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "A=b=c"],
            "ExposedPorts": {"8765/tcp": {}, "53/udp": {}},
            "Labels": {"org.opencontainers.image.title": "prog", "x": "y=z"},
            "User": "65532:65532",
            "WorkingDir": "/",
        },
        "created": CREATED,
        "history": [{"created": CREATED, "created_by": config["history"][0]["created_by"]}],
        "os": "linux",
        "rootfs": {"diff_ids": [sha(gzip.decompress(layer_gz))], "type": "layers"},
    }
    assert "oci_image" in config["history"][0]["created_by"]


def test_config_omits_empty_keys_and_epoch_zero(inputs, tmp_path):
    run_oci_tool(["--layout", tmp_path / "oci", "--add", f"{inputs / 'extra.txt'}:x", "--arch", "arm64"],
                 epoch=None)
    *_, config, _ = load_layout(tmp_path / "oci", "latest")
    assert config["config"] == {"WorkingDir": "/"}
    assert config["architecture"] == "arm64"
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert config["history"][0]["created"] == "1970-01-01T00:00:00Z"
    run_oci_tool(["--layout", tmp_path / "w", "--add", f"{inputs / 'extra.txt'}:x", "--workdir", "/home/nonroot"])
    assert load_layout(tmp_path / "w", "latest")[4]["config"] == {"WorkingDir": "/home/nonroot"}


# ------------------------------------------------------------------ case 22


def test_archive_layout_and_docker_manifest(image):
    layout_config = load_layout(image / "oci", "0.1.0")[3]
    raw = (image / "prog.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    names = [m.name for m in members]
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert all(m.isdir() and m.mode == 0o755 for m in members[:2])
    assert names[2:] == sorted(names[2:])
    assert names[-3:] == ["index.json", "manifest.json", "oci-layout"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (EPOCH, 0, 0, "", ""), m.name
        if m.isfile():
            assert m.mode == 0o644, m.name
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    assert files["oci-layout"] == b'{"imageLayoutVersion":"1.0.0"}'

    config_name = "blobs/sha256/" + hashlib.sha256(layout_config).hexdigest()
    assert files[config_name] == layout_config
    config = json.loads(layout_config)
    diff_id = config["rootfs"]["diff_ids"][0]
    layer_name = "blobs/sha256/" + diff_id.split(":")[1]
    assert files["manifest.json"] == json.dumps(
        [{"Config": config_name, "RepoTags": ["hatchway/prog:0.1.0"], "Layers": [layer_name]}]
    ).encode()
    docker_manifest = json.loads(files["manifest.json"])
    assert list(docker_manifest[0]) == ["Config", "RepoTags", "Layers"]

    index = json.loads(files["index.json"])
    assert files["index.json"] == compact(index)
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "hatchway/prog:0.1.0"}
    man_bytes = files["blobs/sha256/" + entry["digest"].split(":")[1]]
    assert entry["size"] == len(man_bytes)
    man = json.loads(man_bytes)
    assert man["layers"] == [{"digest": diff_id, "mediaType": "application/vnd.oci.image.layer.v1.tar",
                              "size": len(files[layer_name])}]
    assert man["config"] == {"digest": sha(layout_config), "mediaType": "application/vnd.oci.image.config.v1+json",
                             "size": len(layout_config)}
    assert sha(files[layer_name]) == diff_id
    assert sorted(files) == sorted([config_name, layer_name, "blobs/sha256/" + entry["digest"].split(":")[1],
                                    "index.json", "manifest.json", "oci-layout"])
    # The archive's manifest differs from the layout's (uncompressed layer).
    assert entry["digest"] != load_layout(image / "oci", "0.1.0")[0]["digest"]


def test_archive_default_repo_tag(inputs, tmp_path):
    run_oci_tool(["--layout", tmp_path / "oci", "--tag", "t1", "--add", f"{inputs / 'extra.txt'}:x",
                  "--archive", tmp_path / "a.tar"])
    with tarfile.open(tmp_path / "a.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        index = json.loads(tar.extractfile("index.json").read())
    assert manifest[0]["RepoTags"] == ["image:t1"]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "image:t1"


def test_bad_inputs_are_refused(inputs, tmp_path):
    base = [sys.executable, str(OCI_TOOL),
            "--layout", str(tmp_path / "oci")]
    for extra in (["--add", str(inputs / "extra.txt")],  # no DEST
                  ["--add", f"{inputs / 'extra.txt'}:../escape"],
                  ["--add", f"{inputs / 'extra.txt'}:x", "--add", f"{inputs / 'extra.txt'}:/x"],
                  ["--label", "novalue"]):
        proc = subprocess.run([*base, *extra], capture_output=True)
        assert proc.returncode != 0, extra
    assert not (tmp_path / "oci" / "index.json").exists()


# ------------------------------------------------------------------ cases 19-20: real tools


def test_skopeo_reads_layout_and_both_archive_forms(image):
    skopeo = require_tool("skopeo")
    entry, *_ , config, layer_gz = load_layout(image / "oci", "0.1.0")
    out = json.loads(run([skopeo, "inspect", f"oci:{image / 'oci'}:0.1.0"]).stdout)
    assert out["Digest"] == entry["digest"]
    assert out["Created"] == CREATED and out["Architecture"] == "amd64" and out["Os"] == "linux"
    assert out["Layers"] == [sha(layer_gz)]
    assert out["Env"] == config["config"]["Env"]
    diff_id = config["rootfs"]["diff_ids"][0]
    for transport in ("oci-archive", "docker-archive"):
        out = json.loads(run([skopeo, "inspect", f"{transport}:{image / 'prog.tar'}"]).stdout)
        assert out["Created"] == CREATED, transport
        assert out["Layers"] == [diff_id], transport
        cfg = json.loads(run([skopeo, "inspect", "--config", f"{transport}:{image / 'prog.tar'}"]).stdout)
        assert cfg["config"]["User"] == "65532:65532" and cfg["config"]["Entrypoint"] == ["/app/prog"]
    # the docker-archive form finds the image by its RepoTags entry, and only by it
    run([skopeo, "inspect", f"docker-archive:{image / 'prog.tar'}:hatchway/prog:0.1.0"])
    assert run([skopeo, "inspect", f"docker-archive:{image / 'prog.tar'}:hatchway/prog:other"],
               check=False).returncode != 0


def test_umoci_stat_and_unpack_modes_owners_mtimes(image, tmp_path):
    umoci = require_tool("umoci")
    stat = run([umoci, "stat", "--image", f"{image / 'oci'}:0.1.0"]).stdout.decode()
    assert "oci_image" in stat
    bundle = tmp_path / "bundle"
    args = [umoci, "unpack", "--image", f"{image / 'oci'}:0.1.0", str(bundle)]
    if os.geteuid() != 0:
        args.insert(2, "--rootless")
    run(args)
    rootfs = bundle / "rootfs"
    seen = {}
    for path in [rootfs, *rootfs.rglob("*")]:
        st = os.lstat(path)
        rel = str(path.relative_to(rootfs))
        seen[rel] = (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)
        if rel != ".":
            assert int(st.st_mtime) == EPOCH, rel
    assert seen["tmp"] == (oct(0o1777), 0, 0)
    assert seen["app/prog"] == (oct(0o755), 0, 0)
    assert seen["home/nonroot"] == (oct(0o700), 65532, 65532)
    if os.geteuid() == 0:
        for rel, (_, uid, gid) in seen.items():
            if rel not in (".", "home/nonroot"):
                assert (uid, gid) == (0, 0), rel
    assert (rootfs / "etc" / "passwd").read_text() == PASSWD
    assert (rootfs / "app" / "prog").read_bytes()[:4] == b"\x7fELF"
    cfg = json.loads((bundle / "config.json").read_text())
    assert (cfg["process"]["user"]["uid"], cfg["process"]["user"]["gid"]) == (65532, 65532)
    assert cfg["process"]["args"] == ["/app/prog", "--host=0.0.0.0", "--port=8765"]
