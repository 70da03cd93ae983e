"""Near-duplicate groups: which rows or photos are copies of one another, lightly altered.

Sign-MNIST's training file holds about 50 lightly altered copies of each of some 1,700
photos; a random split puts near-copies of every evaluation image into training, and any
accuracy measured on it is a memory test. Every stored row therefore gets a group id: the
connected components of a graph whose edges join rows with cosine similarity of at least
`threshold` between their *features*.

A modality implements one role, `features(items) -> float32 matrix` with L2-normalised
rows; everything after that is shared:
- `PixelFeatures`: images (N x H x W x C uint8, pixel tables and image folders alike),
  area-downsampled to at most `max_side` pixels a side, each image's mean subtracted (so a
  brightness change is not a different photo), L2-normalised.
- text (a later modality) implements the same role with its encoder's embeddings.

No n x n matrix is built. Candidates come from an approximate nearest-neighbour index
(faiss: an inverted-file index over a PCA projection of the features, exact search for small
sets); every candidate pair is then checked with the exact cosine of the full features, so
the threshold means what it says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Candidate neighbours per row; a group only needs a chain of edges, not all of them.
NEIGHBOURS = 32
# Below this many rows, exact (brute-force) search is cheap enough.
EXACT_BELOW = 20_000
PCA_DIMENSIONS = 64
CHUNK = 8192


class FeatureExtractor(Protocol):
    """What a modality implements to be grouped: L2-normalised float32 features, one row per item."""

    method: str

    def features(self, items) -> np.ndarray: ...


@dataclass
class PixelFeatures:
    """Mean-centred, area-downsampled pixels of uint8 images (N x H x W x C)."""

    max_side: int = 32
    method: str = "cosine of mean-centred pixels"

    def shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(height, width, channels) of the feature map of an image of `image_shape`."""
        h, w, c = image_shape
        fh, fw = -(-h // self.max_side), -(-w // self.max_side)
        return h // fh, w // fw, c

    def features(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        n = len(images)
        if n == 0:
            return np.zeros((0, 1), np.float32)
        _, h, w, c = images.shape
        oh, ow, _ = self.shape((h, w, c))
        fh, fw = h // oh, w // ow  # pooling factors
        out = np.empty((n, oh * ow * c), np.float32)
        for start in range(0, n, CHUNK):
            chunk = np.asarray(images[start:start + CHUNK], dtype=np.float32)
            if fh > 1 or fw > 1:
                chunk = chunk[:, :oh * fh, :ow * fw].reshape(len(chunk), oh, fh, ow, fw, c).mean(axis=(2, 4))
            flat = chunk.reshape(len(chunk), -1)
            flat -= flat.mean(axis=1, keepdims=True)
            norms = np.linalg.norm(flat, axis=1, keepdims=True)
            flat /= np.where(norms > 0, norms, 1.0)  # a blank image stays all zeros: similar to nothing
            out[start:start + len(chunk)] = flat
        return out

    def for_grouping(self, images: np.ndarray):
        """The features of `images` as a matrix, or computed on demand (LazyFeatures) for sets
        large enough that the whole float32 matrix would dominate memory (860 MB at 274k rows)."""
        return self.features(images) if len(images) < EXACT_BELOW else LazyFeatures(images, self)

    def grouping(self, images: np.ndarray) -> GroupingFeatures:
        """What grouping compares for `images` (N x H x W x C uint8)."""
        return GroupingFeatures(self.for_grouping(images), self.method, self.shape(tuple(np.shape(images)[1:])))


@dataclass
class GroupingFeatures:
    """What near-duplicate grouping compares for a set of items (a modality's
    `grouping_features`): their features (a matrix of L2-normalised rows, or LazyFeatures),
    how they were made, in words, and for images the feature map's (height, width, channels),
    which comparisons of shifted copies need (None: items are not shifted)."""

    features: object
    method: str
    shape: tuple[int, int, int] | None = None


class LazyFeatures:
    """Features computed from the items when indexed, so a large set never holds its whole
    float32 feature matrix (274,550 Sign-MNIST rows: 860 MB) at once."""

    def __init__(self, items, extractor, rows: np.ndarray | None = None):
        self.items, self.extractor, self.rows = items, extractor, rows
        self._dimension = extractor.features(np.asarray(items[:1])).shape[1] if len(items) else 1

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.items)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self._dimension

    def __getitem__(self, index) -> np.ndarray:
        local = np.arange(len(self))[index]
        flat = local.ravel()
        rows = self.rows[flat] if self.rows is not None else flat
        return self.extractor.features(np.asarray(self.items[rows])).reshape(*local.shape, -1)

    def take(self, index: np.ndarray) -> LazyFeatures:
        """The features of a subset of the rows, still on demand."""
        local = np.asarray(index)
        return LazyFeatures(self.items, self.extractor, self.rows[local] if self.rows is not None else local)


def take(features, index: np.ndarray):
    """Rows `index` of a feature matrix or of LazyFeatures."""
    return features.take(index) if isinstance(features, LazyFeatures) else features[index]


def _dense(features) -> np.ndarray:
    return features[np.arange(len(features))] if isinstance(features, LazyFeatures) else features


@dataclass
class Groups:
    """A group id per row (0..groups-1) and how they were found."""

    ids: np.ndarray
    method: str
    threshold: float | None
    seconds: float

    @property
    def count(self) -> int:
        return int(self.ids.max()) + 1 if len(self.ids) else 0

    def summary(self) -> dict:
        sizes = np.bincount(self.ids) if len(self.ids) else np.zeros(0, int)
        return {"method": self.method, "threshold": self.threshold, "groups": self.count,
                "median_group_size": float(np.median(sizes)) if len(sizes) else 0.0,
                "largest_group": int(sizes.max()) if len(sizes) else 0,
                "singletons": int((sizes == 1).sum()), "seconds": round(self.seconds, 3)}


def _index(features: np.ndarray, seed: int = 0):
    """A faiss index over `features` (inner product) and the vectors it searches with."""
    import faiss  # lazy: faiss (and scipy below) load only when a version is grouped, not with every CLI command

    n, d = features.shape
    if n < EXACT_BELOW or d <= PCA_DIMENSIONS:
        index = faiss.IndexFlatIP(d)
        index.add(_dense(features))
        return index, None
    # Candidates from a PCA projection (4x-12x less memory and work), verified on full features.
    sample = features[np.sort(np.random.default_rng(seed).choice(n, size=min(n, 50_000), replace=False))]
    pca = faiss.PCAMatrix(d, PCA_DIMENSIONS)
    pca.train(sample)
    reduced = np.empty((n, PCA_DIMENSIONS), np.float32)
    for start in range(0, n, CHUNK * 4):
        reduced[start:start + CHUNK * 4] = pca.apply(features[start:start + CHUNK * 4])
    faiss.normalize_L2(reduced)
    nlist = int(min(4096, 4 * np.sqrt(n), n // 40))  # faiss wants >= 39 training points per list
    quantizer = faiss.IndexFlatIP(PCA_DIMENSIONS)
    index = faiss.IndexIVFFlat(quantizer, PCA_DIMENSIONS, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = 10
    index.train(reduced[np.random.default_rng(seed + 1).choice(n, size=min(n, 40 * nlist), replace=False)])
    index.add(reduced)
    index.nprobe = 12
    return index, (pca, reduced)


def _search(index, projection, queries, rows: np.ndarray, k: int, own: bool = False):
    """Candidate neighbour indices of rows `rows` of `queries` (rows of the indexed set itself when `own`)."""
    if projection is None:
        return index.search(queries[rows], k)[1]
    pca, reduced = projection
    if own:
        projected = reduced[rows]
    else:
        import faiss  # lazy, as in _index

        projected = pca.apply(queries[rows])
        faiss.normalize_L2(projected)
    return index.search(projected, k)[1]


def _exact(a: np.ndarray, b: np.ndarray, rows: np.ndarray, neighbours: np.ndarray,
           shape: tuple[int, int, int] | None = None, max_shift: int = 0) -> np.ndarray:
    """Cosine of each (row, neighbour) pair: rows of `a` against rows of `b` (normalised).

    With `shape` (h, w, c) and `max_shift`, the best cosine over translations of the neighbour
    by up to `max_shift` pixels each way (what falls off the edge counts as the mean)."""
    safe = np.where(neighbours < 0, 0, neighbours)
    left, right = a[rows], b[safe]
    sims = np.einsum("nd,nkd->nk", left, right, optimize=True)
    if shape is not None and max_shift > 0:
        h, w, c = shape
        left = left.reshape(len(rows), h, w, c)
        right = right.reshape(len(rows), right.shape[1], h, w, c)
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                if dy == 0 and dx == 0:
                    continue
                ay, by = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
                ax, bx = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
                np.maximum(sims, _overlap_correlation(left[:, ay, ax], right[:, :, by, bx]), out=sims)
    return np.where(neighbours < 0, -1.0, sims)


def _overlap_correlation(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Pearson correlation of each left image with its k right images over the overlap region
    alone (what a shift pushed off the edge counts for neither)."""
    m = left[0].size
    a = left.reshape(len(left), -1).astype(np.float64)
    b = right.reshape(right.shape[0], right.shape[1], -1).astype(np.float64)
    sa, sb = a.sum(1), b.sum(2)
    cov = np.einsum("nd,nkd->nk", a, b, optimize=True) - sa[:, None] * sb / m
    va = (a * a).sum(1) - sa * sa / m
    vb = (b * b).sum(2) - sb * sb / m
    return (cov / np.sqrt(np.maximum(va[:, None] * vb, 1e-12))).astype(np.float32)


def group_ids(features, threshold: float, method: str, shape: tuple[int, int, int] | None = None,
              max_shift: int = 0) -> Groups:
    """Connected components of the graph joining rows whose cosine similarity >= threshold.

    `features` is a matrix of L2-normalised rows or LazyFeatures (computed chunk by chunk)."""
    from scipy.sparse import coo_matrix  # lazy, as faiss in _index
    from scipy.sparse.csgraph import connected_components

    started = time.perf_counter()
    n = len(features)
    if n == 0:
        return Groups(np.zeros(0, np.int64), method, threshold, 0.0)
    k = min(NEIGHBOURS, n)
    index, projection = _index(features)
    sources, targets = [], []
    step = 1024  # candidate pairs checked at a time: 1,024 x 32 neighbours' features
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        neighbours = _search(index, projection, features, rows, k, own=True)
        sims = _exact(features, features, rows, neighbours, shape, max_shift)
        keep = (sims >= threshold) & (neighbours != rows[:, None]) & (neighbours >= 0)
        r, c = np.nonzero(keep)
        sources.append(rows[r])
        targets.append(neighbours[r, c])
    src = np.concatenate(sources)
    dst = np.concatenate(targets)
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return Groups(_renumbered(labels), method, threshold, time.perf_counter() - started)


def _renumbered(labels: np.ndarray) -> np.ndarray:
    """Group ids numbered by first appearance, so the same grouping always has the same ids."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


def groups_from_column(values) -> Groups:
    """Groups given by a column of the data (e.g. the signer or the patient)."""
    started = time.perf_counter()
    _, inverse = np.unique(np.asarray([str(v) for v in values], dtype=object), return_inverse=True)
    return Groups(_renumbered(inverse), "column", None, time.perf_counter() - started)


def nearest(reference, queries) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the most similar reference row and their cosine similarity."""
    if not len(reference) or not len(queries):
        return np.full(len(queries), -1, np.int64), np.full(len(queries), -1.0, np.float32)
    index, projection = _index(reference)
    k = 1 if projection is None else min(8, len(reference))
    best_idx = np.empty(len(queries), np.int64)
    best_sim = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), 2048):
        rows = np.arange(start, min(len(queries), start + 2048))
        neighbours = _search(index, projection, queries, rows, k)
        sims = _exact(queries, reference, rows, neighbours)
        pick = sims.argmax(axis=1)
        best_idx[rows] = neighbours[np.arange(len(rows)), pick]
        best_sim[rows] = sims[np.arange(len(rows)), pick]
    return best_idx, best_sim
