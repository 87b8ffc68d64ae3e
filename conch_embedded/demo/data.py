"""A generated implicit-feedback dataset with the structure real ones have.

Item popularity is Zipf-skewed (a few hits, a long tail), users belong to taste
clusters that favour their cluster's items, and activity per user is
log-normal. Seeded, so every build produces the same interactions.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from exporters.implicit import Interactions


def generate_interactions(
    n_users: int = 1000,
    n_items: int = 500,
    n_clusters: int = 8,
    *,
    cluster_affinity: float = 8.0,
    seed: int = 7,
) -> Interactions:
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(n_items) + 1
    popularity = 1.0 / ranks**1.1
    item_cluster = rng.integers(n_clusters, size=n_items)
    user_cluster = rng.integers(n_clusters, size=n_users)
    activity = np.clip(rng.lognormal(np.log(15), 0.7, size=n_users), 3, n_items // 4).astype(int)

    rows, cols, counts = [], [], []
    for user in range(n_users):
        weights = popularity * np.where(item_cluster == user_cluster[user], cluster_affinity, 1.0)
        chosen = rng.choice(n_items, size=activity[user], replace=False, p=weights / weights.sum())
        rows.append(np.full(len(chosen), user))
        cols.append(chosen)
        counts.append(1 + rng.poisson(1.0, size=len(chosen)))
    matrix = sparse.csr_matrix(
        (np.concatenate(counts).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_users, n_items),
    )
    return Interactions(
        user_ids=[f"user-{u:05d}" for u in range(n_users)],
        item_ids=[f"item-{i:05d}" for i in range(n_items)],
        matrix=matrix,
    )
