"""The submission bundle: one deterministic zip the client writes and the server reads.

Members: ``manifest.json`` (name, description, scale, track, suite, dataset_size,
checkpoint_sha256), ``eval_results.jsonl`` and ``scores.json`` (as the eval stage wrote
them), ``info.json`` (the training run's), and for the filtering track ``subset.npy.gz``
(the upstream uid file, gzip). Zip entries carry a fixed date and the gzip no mtime, so
the same run gives the same bytes; the content hash names a submission (stored once).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacurate.layout import EVAL_RESULTS, INFO, SCORES

from .validate import SubmissionError, SubmissionTooLarge

MANIFEST, UIDS = "manifest.json", "subset.npy.gz"
RESULTS = EVAL_RESULTS   # a run's own files keep their names in the bundle (SCORES, INFO too)
REQUIRED = (MANIFEST, RESULTS, SCORES, INFO)
MAX_TEXT_MEMBER = 4 << 20           # bytes of any JSON member (a 38-task eval_results.jsonl is ~10 kB)
MAX_JSON_DEPTH = 32                 # nesting of objects and arrays in a JSON member
MAX_NUMBER_CHARS = 40               # characters of one JSON number (a float's repr needs at most 24)
NPY_HEADER_SLACK = 4096
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class Bundle:
    manifest: dict
    results_text: str
    scores: object
    info: object
    uids: np.ndarray | None
    content_hash: str


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _content_hash(members: dict[str, bytes]) -> str:
    """sha256 over member names and the sha256 of their (uncompressed) bytes."""
    h = hashlib.sha256()
    for name in sorted(members):
        h.update(name.encode() + b"\0" + hashlib.sha256(members[name]).digest())
    return h.hexdigest()


def write_bundle(manifest: dict, results_text: str, scores_bytes: bytes, info_bytes: bytes,
                 uid_npy: bytes | None) -> bytes:
    """The zip bytes of a bundle (deterministic for the same inputs)."""
    members = {MANIFEST: canonical_json(manifest), RESULTS: results_text.encode("utf-8"),
               SCORES: scores_bytes, INFO: info_bytes}
    if uid_npy is not None:
        members[UIDS] = gzip.compress(uid_npy, compresslevel=6, mtime=0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            zi = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            zi.compress_type = zipfile.ZIP_STORED if name == UIDS else zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, members[name])
    return buf.getvalue()


def _read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member's bytes, decompressed as a stream that stops at ``limit`` (whatever its header claims)."""
    import zlib

    info = zf.getinfo(name)
    if info.flag_bits & 0x1:
        raise SubmissionError(f"bundle: member {name} is encrypted; write the bundle with `datacurate submit`")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise SubmissionError(f"bundle: member {name} uses compression method {info.compress_type}; only stored "
                              "and deflated members are read (write the bundle with `datacurate submit`)")
    if info.file_size > limit:
        raise SubmissionTooLarge(f"bundle: member {name} is {info.file_size:,} bytes, over the {limit:,}-byte limit")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as e:
        raise SubmissionError(f"bundle: member {name} cannot be read ({e}); the zip is damaged: write it again "
                              "with `datacurate submit`") from None
    if len(data) > limit:
        raise SubmissionTooLarge(f"bundle: member {name} is over the {limit:,}-byte limit")
    return data


def _number(kind: str, name: str):
    def parse(text: str):
        if len(text) > MAX_NUMBER_CHARS:
            raise SubmissionError(f"{name}: a number of {len(text):,} characters ({text[:20]}...); numbers are at "
                                  f"most {MAX_NUMBER_CHARS} characters")
        return int(text) if kind == "int" else float(text)
    return parse


def _no_constant(name: str):
    def parse(text: str):
        raise SubmissionError(f"{name}: {text} is not a JSON number; write a finite number or null")
    return parse


def check_json_value(obj, name: str) -> None:
    """Nesting at most MAX_JSON_DEPTH, and text that every database stores: no NUL character, no lone
    surrogate (PostgreSQL refuses both, SQLite's JSON keeps them unreadable). Iterative: no recursion."""
    stack = [(obj, 1, "", False)]          # (value, depth, its path, whether it is a key)
    while stack:
        value, depth, path, is_key = stack.pop()
        if isinstance(value, str):
            where = f"{'key' if is_key else 'field'} {path!r}" if path else "a value"
            if "\x00" in value:
                raise SubmissionError(f"{name}: {where} holds a NUL character")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise SubmissionError(f"{name}: {where} holds a lone surrogate (not text)") from None
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise SubmissionError(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                sub = f"{path}.{k}" if path else str(k)
                if isinstance(k, str):
                    stack.append((k, depth, sub, True))
                stack.append((v, depth + 1, sub, False))


def load_json(data: bytes | str, name: str):
    """A JSON member, parsed with bounds: numbers of at most MAX_NUMBER_CHARS characters, no NaN or
    Infinity, nesting and text as ``check_json_value`` allows; any defect is a SubmissionError (422)."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        obj = json.loads(text, parse_int=_number("int", name), parse_float=_number("float", name),
                         parse_constant=_no_constant(name))
    except UnicodeDecodeError as e:
        raise SubmissionError(f"{name}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:       # worded as eval.results.parse_lines words it
        raise SubmissionError(f"{name}: not JSON ({e.msg} at character {e.pos})") from None
    except RecursionError:
        raise SubmissionError(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json_value(obj, name)
    return obj


def uid_byte_limit(manifest: dict, max_uid_bytes: int) -> int:
    """Bytes an uncompressed uid file may have: the scale's pool size (filtering) or the server cap."""
    from datacurate.scales import SCALES

    scale = SCALES.get(manifest.get("scale")) if isinstance(manifest.get("scale"), str) else None
    if manifest.get("track") == "filtering" and scale is not None:
        return min(max_uid_bytes, scale.pool_size * 16 + NPY_HEADER_SLACK)
    return max_uid_bytes


def read_bundle(data: bytes, max_uid_bytes: int = 1 << 30) -> Bundle:
    """Parse bundle bytes with bounded decompression; raise SubmissionError on any defect."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise SubmissionError("bundle: not a zip file (write it with `datacurate submit --dry-run`)") from None
    with zf:
        listed = zf.namelist()
        names = set(listed)
        if len(names) != len(listed):
            dup = next(n for n in listed if listed.count(n) > 1)
            raise SubmissionError(f"bundle: member {dup} appears more than once; write the bundle with `datacurate submit`")
        unknown = sorted(names - set(REQUIRED) - {UIDS})
        if unknown:
            raise SubmissionError(f"bundle: unexpected member(s) {', '.join(unknown)}")
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise SubmissionError(f"bundle: missing member(s) {', '.join(missing)}")
        raw = {n: _read_member(zf, n, MAX_TEXT_MEMBER) for n in REQUIRED}
        manifest = load_json(raw[MANIFEST], MANIFEST)
        if not isinstance(manifest, dict):
            raise SubmissionError("manifest.json: expected a JSON object")
        uids = None
        if UIDS in names:
            limit = uid_byte_limit(manifest, max_uid_bytes)
            gz = _read_member(zf, UIDS, limit + (1 << 20))
            try:
                with gzip.GzipFile(fileobj=io.BytesIO(gz)) as g:
                    npy = g.read(limit + 1)
            except (OSError, EOFError) as e:
                raise SubmissionError(f"bundle: {UIDS} is not gzip data ({e})") from None
            if len(npy) > limit:
                raise SubmissionTooLarge(f"subset.npy: over {limit:,} bytes, more uids than the "
                                         f"{manifest.get('scale')!r} pool can hold")
            raw[UIDS] = npy
            try:
                uids = np.load(io.BytesIO(npy), allow_pickle=False)
            except Exception as e:
                raise SubmissionError(f"subset.npy: not a numpy .npy file ({e})") from None
    try:
        results_text = raw[RESULTS].decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError("eval_results.jsonl: not UTF-8 text") from None
    return Bundle(manifest=manifest, results_text=results_text, scores=load_json(raw[SCORES], SCORES),
                  info=load_json(raw[INFO], INFO), uids=uids, content_hash=_content_hash(raw))
