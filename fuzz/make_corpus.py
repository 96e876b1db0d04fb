"""Writes the seed corpora (see make-corpus.sh). Deterministic apart from the gpg signature."""
import glob, gzip, io, lzma, os, shutil, sqlite3, struct, subprocess, tarfile, tempfile

C = "fuzz/corpus"
H = "a" * 64
D = "sha256:" + H


def put(target, name, data):
    os.makedirs(f"{C}/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{C}/{target}/{name}", "wb") as f:
        f.write(data)


def copy(target, pattern):
    for p in sorted(glob.glob(pattern)):
        if os.path.isfile(p) and os.path.getsize(p) < 64 << 10:
            put(target, os.path.basename(p), open(p, "rb").read())


# distribution: path[?query] and references
for i, s in enumerate([
    "/v2/", "/v2/library/nginx/manifests/latest", f"/v2/a/b-c/blobs/{D}",
    "/v2/x/tags/list?n=10&last=a", f"/v2/x/referrers/{D}?artifactType=application/json",
    "/v2/evil.example/x/manifests/1", "/v2/local/../../x/manifests/1", f"/v2/x/manifests/{D}",
    "docker.io/library/nginx:1.25", "[::1]:5000/x:1@" + D, "registry:5000/x/y:tag", D,
    "sha512:" + "b" * 128, "v1.2.3_rc-1",
]):
    put("distribution", f"seed{i}", s)

# range: 8 bytes little-endian total, then the header
for i, (total, h) in enumerate([(100, "bytes=0-99"), (100, "bytes=-5"), (100, "bytes=10-"),
                                (100, "bytes=1-2,3-4"), (0, "bytes=0-0"), (2**63, "bytes=9-")]):
    put("range", f"seed{i}", struct.pack("<Q", total) + h.encode())

# manifest: OCI and Docker manifests and indexes
put("manifest", "oci-manifest", '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    f'"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},'
    f'"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D}","size":3}}]}}')
put("manifest", "oci-index", '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
    f'"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":7,'
    '"platform":{"os":"linux","architecture":"arm64","variant":"v8"},"artifactType":"application/vnd.example+json"},'
    f'{{"digest":"{D}","platform":{{"os":"unknown","architecture":"unknown"}}}}]}}')
put("manifest", "docker-list", '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}')
put("manifest", "schema1", '{"schemaVersion":1,"fsLayers":[{"blobSum":"' + D + '"}]}')
put("manifest", "deep", "[" * 130 + "]" * 130)

copy("scan_report", "src/scan/testdata/reports/*")
copy("scan_report", "src/scan/testdata/malformed/*")
copy("admission_review", "tests/fixtures/admission/*")

# deb822: status, status.d, Release, Packages
copy("deb822", "src/pkgs/testdata/dpkg/status")
copy("deb822", "src/pkgs/testdata/dpkg/status.d/*")
release = """Origin: Debian
Label: Debian
Suite: stable
Codename: bookworm
Date: Sat, 10 Feb 2024 09:57:45 UTC
Valid-Until: Sat, 17 Feb 2024 09:57:45 UTC
Architectures: amd64 arm64
Components: main contrib
SHA256:
 """ + H + """ 1234 main/binary-amd64/Packages
 """ + H + """ 567 main/binary-amd64/Packages.xz
 """ + H + """ 89 main/binary-all/Packages.gz
"""
put("deb822", "Release", release)
put("deb822", "Packages", """Package: libc6
Source: glibc (2.36-9+deb12u4)
Version: 2.36-9+deb12u4
Architecture: amd64
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb
Size: 2757084
SHA256: """ + H + """
Description: GNU C Library
 multi-line
 .
 description

Package: openssl
Version: 3.0.11-1~deb12u2
Architecture: amd64
Filename: pool/main/o/openssl/openssl_3.0.11-1~deb12u2_amd64.deb
Size: 1
SHA256: """ + H + "\n")

# inrelease: a Release signed with the committed throwaway key
home = tempfile.mkdtemp()
env = dict(os.environ, GNUPGHOME=home)
subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                "patchpull fuzz <fuzz@patchpull.invalid>", "ed25519", "sign", "never"],
               env=env, check=True, capture_output=True)
pub = subprocess.run(["gpg", "--armor", "--export"], env=env, check=True, capture_output=True).stdout
open("fuzz/keys/fuzz.asc", "wb").write(pub)
signed = subprocess.run(["gpg", "--batch", "--clearsign"], input=release.encode(), env=env,
                        check=True, capture_output=True).stdout
subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env)
shutil.rmtree(home, ignore_errors=True)
put("inrelease", "InRelease", signed)
put("inrelease", "unsigned", release)

# apk_text: installed database and APKINDEX
copy("apk_text", "src/pkgs/testdata/apk/installed")
put("apk_text", "APKINDEX", """C:Q1abcdefghijklmnopqrstuvwxyz0=
P:musl
V:1.2.5-r0
A:x86_64
S:383152
I:622592
T:the musl c library
o:musl
m:Maintainer <m@example.org>
t:1700000000
D:so:libc.musl-x86_64.so.1

C:Q1bbbbbbbbbbbbbbbbbbbbbbbbbbb0=
P:busybox
V:1.36.1-r29
A:x86_64
S:1
I:1
o:busybox
""")

# rpm: header blobs from the sqlite rpmdb fixture, and a container manifest
db = tempfile.mktemp()
open(db, "wb").write(gzip.decompress(open("src/pkgs/testdata/rpm/sqlite/rpmdb.sqlite.gz", "rb").read()))
for i, (blob,) in enumerate(sqlite3.connect(db).execute("select blob from Packages")):
    put("rpm", f"header{i}", bytes(blob))
os.remove(db)
copy("rpm", "src/pkgs/testdata/rpm/container-manifest-2")


def tar_bytes(files, fmt=tarfile.GNU_FORMAT, apk=False):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, kind, data in files:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                if apk:
                    import hashlib
                    info.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(data).hexdigest()}
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gz(data):
    return gzip.compress(data, mtime=0)


layer_files = [("etc", "dir", None), ("etc/os-release", "file", b"ID=debian\nVERSION_ID=12\n"),
               ("etc/.wh.gone", "file", b""), ("usr/lib/os-release", "hard", "etc/os-release"),
               ("bin", "sym", "usr/bin"), ("var/lib/dpkg/status", "file", b"Package: a\nStatus: install ok installed\nVersion: 1\n")]
put("layer", "layer.tar", tar_bytes(layer_files))
put("layer", "layer-pax.tar", tar_bytes(layer_files, tarfile.PAX_FORMAT))
put("layer", "layer.tar.gz", gz(tar_bytes(layer_files)))
copy("layer", "src/image/testdata/*.zst")

# deb: built by dpkg-deb, gzip and xz
work = tempfile.mkdtemp()
os.makedirs(f"{work}/pkg/DEBIAN")
os.makedirs(f"{work}/pkg/usr/share/doc/fuzz")
open(f"{work}/pkg/DEBIAN/control", "w").write(
    "Package: fuzz\nVersion: 1.0-1\nArchitecture: all\nMaintainer: m <m@example.org>\nDescription: seed\n")
open(f"{work}/pkg/DEBIAN/postinst", "w").write("#!/bin/sh\nexit 0\n")
os.chmod(f"{work}/pkg/DEBIAN/postinst", 0o755)
open(f"{work}/pkg/usr/share/doc/fuzz/copyright", "w").write("seed\n")
os.symlink("copyright", f"{work}/pkg/usr/share/doc/fuzz/link")
for comp in ["gzip", "xz", "zstd", "none"]:
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{comp}", "--build", f"{work}/pkg", f"{work}/fuzz.deb"],
                   check=True, capture_output=True, env=dict(os.environ, SOURCE_DATE_EPOCH="1700000000"))
    put("deb", f"fuzz-{comp}.deb", open(f"{work}/fuzz.deb", "rb").read())
shutil.rmtree(work)


# apk_package: concatenated gzip streams (control tar with .PKGINFO, then data tar), the
# way abuild writes them (tar segments without end-of-archive blocks)
def segment(files):
    data = tar_bytes(files)
    # strip the two zero end-of-archive blocks and the padding after them
    while data.endswith(b"\0" * 512):
        data = data[:-512]
    return data


import hashlib
data = gz(tar_bytes([("etc", "dir", None), ("etc/fuzz", "file", b"seed\n"), ("etc/link", "sym", "fuzz")], tarfile.PAX_FORMAT, apk=True))
pkginfo = (b"pkgname = fuzz\npkgver = 1.0-r0\narch = noarch\nsize = 5\norigin = fuzz\ndatahash = "
           + hashlib.sha256(data).hexdigest().encode() + b"\n")
control = gz(segment([(".PKGINFO", "file", pkginfo), (".post-install", "file", b"#!/bin/sh\n")]))
put("apk_package", "unsigned.apk", control + data)
sig = gz(segment([(".SIGN.RSA.fuzz.rsa.pub", "file", b"\1" * 64)]))
put("apk_package", "signed.apk", sig + control + data)

# decompress: first byte picks the format (0 xz, 1 lzma, 2 gzip, 3 zstd)
plain = b"Package: a\nVersion: 1\n" * 20
put("decompress", "xz", b"\0" + lzma.compress(plain, format=lzma.FORMAT_XZ))
put("decompress", "xz-crc64", b"\0" + lzma.compress(plain, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64))
put("decompress", "xz-sha256", b"\0" + lzma.compress(plain, format=lzma.FORMAT_XZ, check=lzma.CHECK_SHA256))
put("decompress", "lzma", b"\1" + lzma.compress(plain, format=lzma.FORMAT_ALONE))
put("decompress", "gzip", b"\2" + gz(plain) + gz(plain))
put("decompress", "zstd", b"\3" + subprocess.run(["zstd", "-q", "-c"], input=plain, capture_output=True, check=True).stdout)

copy("config", "config/patchpull.toml")
put("config", "minimal", '[[upstream]]\nname = "docker.io"\nurl = "https://registry-1.docker.io"\ndefault = true\n')
