"""Two implicit-feedback recommenders trained with numpy/scipy only, and their file format.

- iALS (Hu, Koren & Volinsky 2008): user and item factors fitted by alternating
  least squares on confidence-weighted binary preferences.
- item-kNN: cosine similarity between item columns, pruned to each item's
  nearest neighbours; a user's score for an item sums its similarity to the
  items the user interacted with.

Both reduce to one scoring rule, `scores = user_vectors[u] @ item_vectors`, which
is what the exported ONNX graph computes. Models are saved as `.npz` without
pickles (`allow_pickle=False`), so loading one runs no code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import sparse

from exporters.arrays import Array

Algorithm = Literal["ials", "item_knn"]


@dataclass
class Interactions:
    user_ids: list[str]
    item_ids: list[str]
    matrix: sparse.csr_matrix  # users x items, interaction counts (0 = none)


@dataclass
class RecommenderModel:
    algorithm: Algorithm
    user_ids: list[str]
    item_ids: list[str]
    seen: sparse.csr_matrix  # users x items, nonzero where the user interacted in training
    user_vectors: Array  # users x d (iALS factors, or item-kNN's binary history rows)
    item_vectors: Array  # d x items (iALS factors transposed, or item-kNN similarity)

    def scores(self, user_indices: Array) -> Array:
        """float32 scores, seen items -inf: the reference the ONNX graph must match."""
        scores = (self.user_vectors[user_indices] @ self.item_vectors).astype(np.float32)
        seen = self.seen[user_indices].toarray() > 0
        scores[seen] = -np.inf
        return np.asarray(scores)

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                algorithm=np.array(self.algorithm),
                user_ids=np.array(self.user_ids),
                item_ids=np.array(self.item_ids),
                seen_indptr=self.seen.indptr,
                seen_indices=self.seen.indices,
                user_vectors=self.user_vectors,
                item_vectors=self.item_vectors,
            )

    @classmethod
    def load(cls, path: Path) -> RecommenderModel:
        """Raises ValueError/KeyError/OSError for files that are not such a model."""
        with np.load(path, allow_pickle=False) as data:
            user_ids = [str(u) for u in data["user_ids"]]
            item_ids = [str(i) for i in data["item_ids"]]
            indices = data["seen_indices"]
            seen = sparse.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, data["seen_indptr"]),
                shape=(len(user_ids), len(item_ids)),
            )
            algorithm = str(data["algorithm"])
            if algorithm not in ("ials", "item_knn"):
                raise ValueError(f"unknown recommender algorithm {algorithm!r}")
            model = cls(
                algorithm="ials" if algorithm == "ials" else "item_knn",
                user_ids=user_ids,
                item_ids=item_ids,
                seen=seen,
                user_vectors=np.asarray(data["user_vectors"], dtype=np.float32),
                item_vectors=np.asarray(data["item_vectors"], dtype=np.float32),
            )
        if model.user_vectors.shape[0] != len(user_ids) or model.item_vectors.shape[1] != len(
            item_ids
        ):
            raise ValueError("vector shapes do not match the user and item id lists")
        return model


def train_ials(
    data: Interactions,
    *,
    factors: int = 32,
    iterations: int = 8,
    regularization: float = 0.1,
    alpha: float = 10.0,
    seed: int = 0,
) -> RecommenderModel:
    """Implicit ALS: confidence c = 1 + alpha * count, preference 1 where count > 0."""
    rng = np.random.default_rng(seed)
    matrix = data.matrix.tocsr().astype(np.float64)
    n_users, n_items = matrix.shape
    users = rng.normal(scale=0.01, size=(n_users, factors))
    items = rng.normal(scale=0.01, size=(n_items, factors))
    by_item = matrix.T.tocsr()
    for _ in range(iterations):
        users = _als_step(matrix, items, regularization, alpha)
        items = _als_step(by_item, users, regularization, alpha)
    return RecommenderModel(
        algorithm="ials",
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        seen=_binary(matrix),
        user_vectors=users.astype(np.float32),
        item_vectors=np.ascontiguousarray(items.T, dtype=np.float32),
    )


def _als_step(
    matrix: sparse.csr_matrix, fixed: Array, regularization: float, alpha: float
) -> Array:
    """Solve every row's factors with the other side fixed (the YtY trick keeps it O(nnz))."""
    k = fixed.shape[1]
    base = fixed.T @ fixed + regularization * np.eye(k)
    solved = np.zeros((matrix.shape[0], k))
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if start == end:
            continue
        cols = matrix.indices[start:end]
        confidence = 1.0 + alpha * matrix.data[start:end]
        observed = fixed[cols]
        lhs = base + (observed.T * (confidence - 1.0)) @ observed
        solved[row] = np.linalg.solve(lhs, observed.T @ confidence)
    return solved


def train_item_knn(data: Interactions, *, neighbors: int = 50) -> RecommenderModel:
    """Cosine similarity between items, keeping each item's `neighbors` most similar."""
    binary = _binary(data.matrix)
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    similarity = (binary.T @ binary).toarray() / np.outer(norms, norms)
    np.fill_diagonal(similarity, 0.0)
    if neighbors < similarity.shape[0]:
        # Per column j (the item being scored), drop all but the strongest neighbours i.
        cutoff = np.partition(similarity, -neighbors, axis=0)[-neighbors]
        similarity[similarity < cutoff[np.newaxis, :]] = 0.0
    return RecommenderModel(
        algorithm="item_knn",
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        seen=binary,
        user_vectors=binary.toarray().astype(np.float32),
        item_vectors=similarity.astype(np.float32),
    )


def _binary(matrix: sparse.spmatrix) -> sparse.csr_matrix:
    binary = sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
    binary.eliminate_zeros()
    binary.data[:] = 1.0
    return binary
