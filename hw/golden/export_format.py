"""The integer-only golden encoder, read from an export directory (docs/arithmetic.md §10-§19).

An export directory is ``manifest.json`` plus one ROM per integer array of the
:mod:`hw.golden` op objects, each in three formats (§2): ``.hex`` (``$readmemh``), ``.mem``
(the same with a ``// width=W depth=D`` header) and ``.bin`` (raw little-endian words, each
padded to ``ceil(width/8)`` bytes), encoded by :mod:`hw.golden.memfile` (whose ``read_memfile``
reads them too). :func:`save_params` writes it, :func:`load_params` rebuilds the objects from it
alone, after checking every file's size and sha256 against the manifest and the manifest's
own arithmetic fields against ``model_sha256`` (:func:`model_digest`; an export written before
that field existed has none and still loads); nothing here imports torch, so the golden model
cannot see the checkpoint it came from.

Manifest ``model`` tree: an op is ``{"op": ClassName, "fields": {...}}``; a field is a JSON
scalar, ``null``, a list, a nested op, ``{"rom": NAME}`` (an int array), ``{"rom_terms": [NAME,
...]}`` (a packed bit array, one ROM per weight term) or ``{"json": {...}}`` (metadata).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from hw.golden import arith
from hw.golden.arith import signed_bits
from hw.errors import BinbertError
from hw.files import temp_name, writing
from hw.golden.attention import Attention
from hw.golden.embedding import Embedding
from hw.golden.encoder_layer import EncoderLayer
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear, IntLinear
from hw.golden.memfile import (FORMATS, bytes_per_word, bytes_to_words, memfile_bytes,
                               memfile_size, words_to_bytes)
from hw.golden.model import EncoderParams
from hw.golden.requant import Lut, Requant
from hw.golden.softmax import Heaviside, Softmax

FORMAT = "binbert-export"
VERSION = 2
MANIFEST = "manifest.json"
# the manifest field holding model_digest() of the fields the arithmetic reads
DIGEST = "model_sha256"
# every op class an export may hold, by the name its manifest records
OPS = {cls.__name__: cls for cls in (Requant, Lut, BinaryLinear, IntLinear, Softmax, Heaviside,
                                     Attention, LayerNorm, Embedding, EncoderLayer, EncoderParams)}
# packed-bit array fields and the field of the same op that holds their row length in bits
BITS_FIELDS = {("BinaryLinear", "weights"): "k", ("Embedding", "word_bits"): "hidden"}


# --------------------------------------------------------------------------------------------
# memory-init files (§2): encoded by hw.golden.memfile, recorded in the manifest
# --------------------------------------------------------------------------------------------

def write_rom(base: Path, words: np.ndarray, width: int) -> dict:
    """Write ``base``.hex/.mem/.bin from (depth, W) uint64 words; return their file records."""
    raw = words_to_bytes(words, width)
    out = {}
    for fmt in FORMATS:
        blob = memfile_bytes(raw, width, fmt)
        path = base.with_name(base.name + "." + fmt)
        path.write_bytes(blob)
        out[fmt] = {"path": path.name, "bytes": len(blob),
                    "sha256": hashlib.sha256(blob).hexdigest()}
    return out


def ints_to_words(values: np.ndarray, width: int) -> np.ndarray:
    """Flat int64 values -> (depth, 1) uint64 words holding their two's complement in ``width`` bits."""
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    return (values.astype(np.int64).view(np.uint64) & mask).reshape(-1, 1)


def words_to_ints(words: np.ndarray, width: int, signed: bool) -> np.ndarray:
    w = words[:, 0].astype(np.uint64)
    if not signed:
        return w.astype(np.int64)
    sign = np.uint64(1 << (width - 1))
    return (w ^ sign).astype(np.int64) - np.int64(1 << (width - 1))


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------

class _Writer:
    def __init__(self, out: Path):
        self.out = out
        self.roms: dict[str, dict] = {}

    def _int_rom(self, name: str, a: np.ndarray) -> dict:
        lo = int(a.min()) if a.size else 0
        hi = int(a.max()) if a.size else 0
        signed = lo < 0
        width = signed_bits(lo, hi) if signed else max(1, hi.bit_length())
        files = write_rom(self.out / name, ints_to_words(a.reshape(-1), width), width)
        self.roms[name] = {"kind": "int", "shape": list(a.shape), "width": width, "signed": signed,
                           "depth": int(a.size), "files": files}
        return {"rom": name}

    def _bits_roms(self, name: str, a: np.ndarray, k: int) -> dict:
        names = []
        for t in range(a.shape[0]):
            tn = f"{name}.t{t}"
            files = write_rom(self.out / tn, a[t], k)
            self.roms[tn] = {"kind": "bits", "shape": [int(a.shape[1]), k], "width": k, "signed": False,
                             "depth": int(a.shape[1]), "files": files}
            names.append(tn)
        return {"rom_terms": names}

    def node(self, obj, path: str):
        if dataclasses.is_dataclass(obj):
            op = type(obj).__name__
            if op not in OPS:
                raise BinbertError(f"{path}: {op} is not an encoder op")
            fields = {}
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                sub = f"{path}.{f.name}" if path else f.name
                key = (op, f.name)
                if key in BITS_FIELDS and value is not None:
                    fields[f.name] = self._bits_roms(sub, value, getattr(obj, BITS_FIELDS[key]))
                else:
                    fields[f.name] = self.node(value, sub)
            return {"op": op, "fields": fields}
        if isinstance(obj, np.ndarray):
            return self._int_rom(path, obj)
        if isinstance(obj, (list, tuple)):
            return [self.node(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            return {"json": obj}
        if obj is None or isinstance(obj, (bool, int, str, float)):
            return obj
        raise BinbertError(f"{path}: cannot serialise {type(obj).__name__}")


def save_params(params: EncoderParams, out_dir, meta: dict | None = None) -> Path:
    """Write ``params`` as ROM files + manifest.json into ``out_dir``; returns the manifest path.

    Every file is written into a temporary directory first (inside ``out_dir`` when it exists,
    else beside it: the same file system) and moved into place once all are complete, the
    manifest last. A failed export (full disk, read-only file system, an op it cannot write)
    removes its temporaries and leaves ``out_dir`` as it was; a file-system fault is a
    one-line error naming ``out_dir``.
    """
    if not isinstance(params, EncoderParams):
        raise BinbertError(f"save_params needs an EncoderParams, got {type(params).__name__}")
    out = Path(out_dir)
    existed = out.is_dir()
    stage = out / f".export.{os.getpid()}.tmp" if existed else temp_name(out)
    try:
        with writing(out):
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
            _write_export(params, stage, meta)
            if not existed:
                os.replace(stage, out)
                return out / MANIFEST
            stale = out / MANIFEST
            if stale.exists():
                stale.unlink()  # a half-moved export must never look complete
            for f in sorted(stage.iterdir()):
                if f.name != MANIFEST:
                    os.replace(f, out / f.name)
            os.replace(stage / MANIFEST, out / MANIFEST)
            stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out / MANIFEST


def model_digest(manifest: dict) -> str:
    """sha256 of the canonical JSON of every manifest field the arithmetic reads: the op tree
    (scalars such as shifts, the ROM names) and the ROM records (shape, width, signedness,
    each file's size and sha256). ``meta`` and the prose fields are left out."""
    blob = json.dumps({"model": manifest["model"], "roms": manifest["roms"]}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def _write_export(params: EncoderParams, out: Path, meta: dict | None) -> None:
    """The ROM files and manifest.json of ``params`` in ``out``."""
    w = _Writer(out)
    tree = w.node(params, "")
    # digested as the reader will see it (tuples become lists, and so on)
    digest = model_digest(json.loads(json.dumps({"model": tree, "roms": w.roms})))
    manifest = {
        "format": FORMAT, "version": VERSION, "contract": "docs/arithmetic.md v2",
        "bit_order": "element k of a packed row is bit k of the ROM word (LSB first, §2)",
        "word_format": {"hex": "one word per line, hex, most significant digit first, "
                               "ceil(width/4) digits", "mem": "hex lines after a '// width=W depth=D' header",
                        "bin": "little-endian, each word padded to ceil(width/8) bytes"},
        "meta": meta or {}, DIGEST: digest, "model": tree, "roms": w.roms,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

def read_manifest(export_dir) -> dict:
    path = Path(export_dir) / MANIFEST
    if not Path(export_dir).is_dir():
        raise BinbertError(f"{export_dir}: export directory does not exist")
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise BinbertError(f"{path}: missing (not a binbert export)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BinbertError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BinbertError(f"{path}: field 'format' must be {FORMAT!r}")
    if m.get("version") != VERSION:
        raise BinbertError(f"{path}: field 'version' is {m.get('version')!r}, this reader needs {VERSION}")
    for key, kind in (("model", dict), ("roms", dict), ("meta", dict)):
        if not isinstance(m.get(key), kind):
            raise BinbertError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    return m


def _check_rom(export_dir: Path, name: str, rec) -> bytes:
    """Validate one ROM's manifest record and files; return the .bin contents."""
    where = f"{MANIFEST}: roms.{name}"
    if not isinstance(rec, dict):
        raise BinbertError(f"{where}: not an object")
    for key, kind in (("kind", str), ("shape", list), ("width", int), ("signed", bool),
                      ("depth", int), ("files", dict)):
        if not isinstance(rec.get(key), kind):
            raise BinbertError(f"{where}.{key}: missing or not a {kind.__name__}")
    width, depth = rec["width"], rec["depth"]
    if rec["kind"] not in ("int", "bits"):
        raise BinbertError(f"{where}.kind: {rec['kind']!r} (expected 'int' or 'bits')")
    if not 1 <= width <= (64 if rec["kind"] == "int" else 1 << 20):
        raise BinbertError(f"{where}.width: {width} unsupported")
    shape = rec["shape"]
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise BinbertError(f"{where}.shape: {shape!r} must be non-negative integers")
    if rec["kind"] == "bits" and (len(shape) != 2 or shape[1] != width or shape[0] != depth):
        raise BinbertError(f"{where}: bits ROM shape {shape} must be [depth={depth}, width={width}]")
    if rec["kind"] == "int" and int(np.prod(shape)) != depth:
        raise BinbertError(f"{where}: shape {shape} holds {int(np.prod(shape))} words, depth says {depth}")
    data = None
    for fmt in FORMATS:
        f = rec["files"].get(fmt)
        if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not isinstance(f.get("sha256"), str):
            raise BinbertError(f"{where}.files.{fmt}: missing path / sha256")
        if Path(f["path"]).name != f["path"]:
            raise BinbertError(f"{where}.files.{fmt}: path {f['path']!r} must be a plain file name")
        path = export_dir / f["path"]
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise BinbertError(f"{path}: ROM file missing (listed in {MANIFEST} as roms.{name})") from None
        want = memfile_size(width, depth, fmt)
        if len(blob) != want or f.get("bytes") != want:
            raise BinbertError(f"{path}: {len(blob)} bytes, expected {want} for {depth} words of "
                               f"{width} bits (truncated, or the manifest does not match)")
        if hashlib.sha256(blob).hexdigest() != f["sha256"]:
            raise BinbertError(f"{path}: sha256 differs from {MANIFEST} (corrupted or replaced file)")
        if fmt == "bin":
            data = blob
    return data


def _decode(name: str, rec: dict, blob: bytes) -> np.ndarray:
    width, depth = rec["width"], rec["depth"]
    raw = np.frombuffer(blob, dtype=np.uint8).reshape(depth, bytes_per_word(width))
    if rec["kind"] == "bits":
        words = bytes_to_words(raw, arith.n_words(width))
        if width % 64 and depth and np.any(words[:, -1] >> np.uint64(width % 64)):
            raise BinbertError(f"{name}.bin: bits beyond width {width} are set")
        return words
    words = bytes_to_words(raw, 1)
    if width < 64 and depth and np.any(words[:, 0] >> np.uint64(width)):
        raise BinbertError(f"{name}.bin: bits beyond width {width} are set")
    return words_to_ints(words, width, rec["signed"]).reshape(rec["shape"])


class _Reader:
    def __init__(self, export_dir: Path, manifest: dict):
        self.dir = export_dir
        self.roms = manifest["roms"]
        self.used: set[str] = set()

    def rom(self, name, path: str) -> np.ndarray:
        if not isinstance(name, str) or name not in self.roms:
            raise BinbertError(f"{MANIFEST}: model.{path} names ROM {name!r}, which roms does not list")
        self.used.add(name)
        rec = self.roms[name]
        return _decode(name, rec, _check_rom(self.dir, name, rec))

    def node(self, v, path: str):
        if isinstance(v, list):
            return [self.node(x, f"{path}.{i}") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            return v
        if "rom" in v:
            return self.rom(v["rom"], path)
        if "rom_terms" in v:
            if not isinstance(v["rom_terms"], list) or not v["rom_terms"]:
                raise BinbertError(f"{MANIFEST}: model.{path}.rom_terms must be a non-empty list")
            terms = [self.rom(n, path) for n in v["rom_terms"]]
            if len({t.shape for t in terms}) != 1:
                raise BinbertError(f"{MANIFEST}: model.{path}: weight terms differ in shape")
            return np.stack(terms)
        if "json" in v:
            return v["json"]
        op = v.get("op")
        if op not in OPS or not isinstance(v.get("fields"), dict):
            raise BinbertError(f"{MANIFEST}: model.{path}: unknown op {op!r}")
        cls = OPS[op]
        names = {f.name for f in dataclasses.fields(cls)}
        given = v["fields"]
        extra = sorted(set(given) - names)
        if extra:
            raise BinbertError(f"{MANIFEST}: model.{path}: unknown field {extra[0]!r} for {op}")
        kwargs = {k: self.node(x, f"{path}.{k}" if path else k) for k, x in given.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise BinbertError(f"{MANIFEST}: model.{path or 'root'}: {op} fields do not match ({exc})") from None
        except BinbertError as exc:
            raise BinbertError(f"{MANIFEST}: model.{path or 'root'}: {exc}") from None


def load_params(export_dir) -> tuple[EncoderParams, dict]:
    """Rebuild the golden model from an export directory. Returns (params, manifest meta).

    Every ROM listed is checked (size, sha256 of .hex/.mem/.bin, value widths) before any
    compute; every op validates its own parameters; the first problem raises a one-line
    BinbertError naming the file or manifest field. A manifest whose fields are all valid but
    differ from its ``model_sha256`` (a hand-edited shift, say) is refused last, so that a
    malformed field is still named as such.
    """
    d = Path(export_dir)
    m = read_manifest(d)
    r = _Reader(d, m)
    params = r.node(m["model"], "")
    if not isinstance(params, EncoderParams):
        raise BinbertError(f"{MANIFEST}: model must be an EncoderParams op")
    unused = sorted(set(m["roms"]) - r.used)
    if unused:
        raise BinbertError(f"{MANIFEST}: roms.{unused[0]} is listed but no op uses it")
    if DIGEST in m and m[DIGEST] != model_digest(m):
        raise BinbertError(f"{d / MANIFEST}: the model fields do not match their digest "
                           f"(edited by hand?): re-export")
    return params, m["meta"]


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------

def run(params: EncoderParams, input_ids, attention_mask=None, token_type_ids=None,
        batch_size: int = 64) -> np.ndarray:
    """Integer logits (N, labels) of many sequences, in batches (golden, integer only)."""
    ids = params.token_ids(input_ids)  # checked once, before the first batch
    out = []
    for s in range(0, ids.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        am = None if attention_mask is None else np.asarray(attention_mask)[sl]
        tt = None if token_type_ids is None else np.asarray(token_type_ids)[sl]
        ids_b = ids[sl]
        if am is not None:  # trailing all-padding columns change nothing: trim them (speed)
            keep = int(np.nonzero(am.any(axis=0))[0].max()) + 1 if am.any() else 1
            ids_b, am = ids_b[:, :keep], am[:, :keep]
            tt = None if tt is None else tt[:, :keep]
        out.append(params.compute(ids_b, am, tt))
    return np.concatenate(out) if out else np.zeros((0, params.num_labels), dtype=np.int64)


def logits_real(params: EncoderParams, logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits, dtype=np.float64) / float(1 << params.logit_frac)
