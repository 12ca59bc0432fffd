"""The real data behind the offline pool: emoji art and CLDR annotations from npm packages.

Each package is fetched once from the npm registry into ``datacurate.env.cache_dir()``,
checked against the ``dist.integrity`` (sha512) the registry published for that version
(pinned below), and only the members the builder needs are extracted, atomically.
A machine without the registry can pre-fill ``CACHE/npm/<package>-<version>.tgz``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import tarfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

REGISTRY = "https://registry.npmjs.org"


class SourceFetchError(UserError):
    """A source package could not be fetched, verified or read."""


@dataclass(frozen=True)
class NpmPackage:
    key: str              # short name used in the pool (rendition source or "cldr")
    package: str
    version: str
    integrity: str        # the registry's dist.integrity for this version
    licence: str
    homepage: str
    members: tuple        # path prefixes inside the tarball that the builder needs

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.package}/-/{self.package}-{self.version}.tgz"

    @property
    def stem(self) -> str:
        return f"{self.package}-{self.version}"

    def describe(self) -> dict:
        return {"name": self.key, "package": self.package, "version": self.version,
                "licence": self.licence, "homepage": self.homepage, "url": self.url,
                "integrity": self.integrity}


# dist.integrity values as published by registry.npmjs.org for these exact versions.
GOOGLE = NpmPackage(
    "google", "emoji-datasource-google", "16.0.0",
    "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
    "Apache-2.0 (Noto Emoji images); MIT (emoji-data metadata)", "https://github.com/iamcal/emoji-data",
    ("package/emoji.json", "package/img/google/64/"))
TWITTER = NpmPackage(
    "twitter", "emoji-datasource-twitter", "16.0.0",
    "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
    "CC-BY-4.0 (Twemoji images); MIT (emoji-data metadata)", "https://github.com/iamcal/emoji-data",
    ("package/emoji.json", "package/img/twitter/64/"))
CLDR = NpmPackage(
    "cldr", "emojibase-data", "17.0.0",
    "sha512-Yvgb5AWoHViHV/gq1qr5ZAarcBip+B27/ZLRsUJkbgAEaLlZ/fof9g882LTpmEpyhBNEC0m2SEmItljHsTygjA==",
    "MIT (emojibase); Unicode License v3 (CLDR annotations)", "https://emojibase.dev",
    ("package/meta/groups.json", "package/*/data.json"))

RENDITION_PACKAGES = (GOOGLE, TWITTER)
PACKAGES = (GOOGLE, TWITTER, CLDR)
DROP_GROUPS = {"component"}          # skin tones and hair styles on their own, not concepts
ENGLISH = "en"
SKIP_LOCALES = {"en", "en-gb"}       # English variants are not "foreign"

SKIMAGE_SOURCE = {"name": "photos", "package": "scikit-image", "version": None,
                  "licence": "BSD-3-Clause (code); public domain / CC0 photographs (see skimage/data/README.txt)",
                  "homepage": "https://scikit-image.org"}


# ----------------------------------------------------------------------------- fetching

def _integrity_ok(path: Path, integrity: str) -> bool:
    algo, _, want = integrity.partition("-")
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return base64.b64encode(h.digest()).decode() == want


def _download(pkg: NpmPackage, dst: Path) -> None:
    import urllib.request

    from tqdm import tqdm

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    try:
        req = urllib.request.Request(pkg.url, headers={"User-Agent": "datacurate-pool-build"})
        with urllib.request.urlopen(req, timeout=60) as r, open(tmp, "wb") as f, \
                tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=f"fetch {pkg.package}@{pkg.version}", file=sys.stderr) as bar:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise SourceFetchError(
            f"could not fetch npm package {pkg.package}@{pkg.version} from {pkg.url} ({e}). "
            f"Without registry access, pre-fill the cache: put that tarball at {dst} "
            f"(cache folder: $DATACURATE_CACHE or ~/.cache/datacurate)") from None
    if not _integrity_ok(tmp, pkg.integrity):
        tmp.unlink(missing_ok=True)
        raise SourceFetchError(f"{pkg.url}: downloaded tarball does not match the pinned integrity "
                               f"{pkg.integrity[:20]}...; refusing to use it")
    os.replace(tmp, dst)


def _wanted(name: str, members: tuple) -> bool:
    import fnmatch

    for m in members:
        if "*" in m:
            if fnmatch.fnmatch(name, m):
                return True
        elif name == m or (m.endswith("/") and name.startswith(m)):
            return True
    return False


def fetch_package(pkg: NpmPackage, cache: Path | None = None) -> Path:
    """Return the folder holding ``pkg``'s needed members, fetching and extracting once."""
    from ..env import cache_dir

    root = Path(cache) if cache is not None else Path(cache_dir())
    npm = root / "npm"
    npm.mkdir(parents=True, exist_ok=True)
    final = npm / pkg.stem
    if (final / ".complete").exists():
        return final
    tgz = npm / f"{pkg.stem}.tgz"
    if tgz.exists() and not _integrity_ok(tgz, pkg.integrity):
        raise SourceFetchError(f"{tgz}: cached tarball of {pkg.package}@{pkg.version} does not match the "
                               f"registry's integrity; delete it (it will be fetched again from {pkg.url})")
    if not tgz.exists():
        _download(pkg, tgz)
    tmp = npm / f".{pkg.stem}.{os.getpid()}.extract"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for m in tar:
                if not m.isfile() or not _wanted(m.name, pkg.members):
                    continue
                rel = Path(m.name)
                if rel.is_absolute() or ".." in rel.parts:
                    raise SourceFetchError(f"{tgz}: unsafe member path {m.name!r}")
                dst = tmp / rel.relative_to("package")
                dst.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)
        (tmp / ".complete").write_text(json.dumps(pkg.describe(), indent=1))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ".complete").exists():  # a half folder from elsewhere: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SourceFetchError(f"{tgz}: cannot extract {pkg.package}@{pkg.version} ({e}); delete the file "
                               f"to fetch it again from {pkg.url}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- the catalog

@dataclass
class Rendition:
    """One real image of a concept: a vendor's art for the base emoji or a skin-tone variant."""
    item_id: str        # "<concept>:<source>" or "<concept>:<source>:<variant hexcode>"
    concept: str
    source: str         # google | twitter
    hexcode: str        # emojibase hexcode of what is drawn
    label: str
    tags: tuple
    path: str           # the 64 px PNG as shipped
    base: bool


@dataclass
class Concept:
    """An emoji concept (skin-tone variants grouped with their base)."""
    id: str             # lowercase emojibase hexcode of the base emoji
    label: str
    tags: tuple
    group: str
    subgroup: str
    renditions: list = field(default_factory=list)


@dataclass
class Catalog:
    concepts: list                   # sorted by id
    translations: dict               # hexcode -> {locale: (label, tags)}
    locales: list
    sources: list                    # describe() of each package


def _norm(hexcode: str) -> str:
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def _image_index(folder: Path, source: str) -> dict:
    """normalised unified code -> path of the 64 px PNG (base emoji and skin variations)."""
    data = json.loads((folder / "emoji.json").read_text("utf-8"))
    img_dir = folder / "img" / source / "64"
    out = {}
    for e in data:
        entries = [e] + list((e.get("skin_variations") or {}).values())
        for v in entries:
            if not v.get(f"has_img_{source}"):
                continue
            p = img_dir / v["image"]
            if p.exists():
                out[_norm(v["unified"])] = str(p)
    return out


def _clean_tags(label: str, tags) -> tuple:
    return tuple(t for t in (tags or []) if t and t.lower() != label.lower())


def load_catalog(cache: Path | None = None) -> Catalog:
    """Fetch the packages (once) and join art with CLDR annotations into concepts."""
    dirs = {p.key: fetch_package(p, cache) for p in PACKAGES}
    cldr = dirs["cldr"]
    meta = json.loads((cldr / "meta" / "groups.json").read_text("utf-8"))
    groups, subgroups = meta["groups"], meta["subgroups"]
    images = {p.key: _image_index(dirs[p.key], p.key) for p in RENDITION_PACKAGES}
    en = json.loads((cldr / ENGLISH / "data.json").read_text("utf-8"))

    concepts = []
    for e in en:
        if "group" not in e or groups.get(str(e["group"])) in DROP_GROUPS:
            continue  # regional indicators have no group; components are not concepts
        if e["label"].startswith("regional indicator"):
            continue
        cid = e["hexcode"].lower()
        c = Concept(cid, e["label"], _clean_tags(e["label"], e.get("tags")), groups[str(e["group"])],
                    subgroups[str(e["subgroup"])])
        variants = [(e, True)] + [(s, False) for s in (e.get("skins") or [])]
        for v, is_base in variants:
            for src in (p.key for p in RENDITION_PACKAGES):
                path = images[src].get(_norm(v["hexcode"]))
                if path is None:
                    continue
                iid = f"{cid}:{src}" if is_base else f"{cid}:{src}:{v['hexcode'].lower()}"
                c.renditions.append(Rendition(iid, cid, src, v["hexcode"], v["label"],
                                              _clean_tags(v["label"], v.get("tags") or e.get("tags")),
                                              path, is_base))
        if any(r.base for r in c.renditions):
            concepts.append(c)
    concepts.sort(key=lambda c: c.id)

    locales = sorted(p.name for p in cldr.iterdir()
                     if (p / "data.json").exists() and p.name not in SKIP_LOCALES)
    translations: dict = {}
    for loc in locales:
        for e in json.loads((cldr / loc / "data.json").read_text("utf-8")):
            for v in [e] + list(e.get("skins") or []):
                lab = v.get("label")
                if lab:
                    translations.setdefault(v["hexcode"], {})[loc] = (
                        lab, _clean_tags(lab, v.get("tags") or e.get("tags")))
    return Catalog(concepts, translations, locales, [p.describe() for p in PACKAGES])


def slug(text: str) -> str:
    """A web-path-safe ascii slug of a label."""
    a = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    out, dash = [], False
    for ch in a:
        if ch.isalnum():
            out.append(ch)
            dash = False
        elif not dash:
            out.append("-")
            dash = True
    return "".join(out).strip("-")[:40] or "image"
