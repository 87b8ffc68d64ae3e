"""Recommenders: training, the ONNX top-K graph, exclusion of seen items, parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conch_embedded.demo.data import generate_interactions
from conch_manifest.schema import RECOMMENDER_INPUT, RECOMMENDER_ITEMS, RECOMMENDER_SCORES
from exporters.implicit import Interactions, RecommenderModel, train_ials, train_item_knn
from exporters.recommender import export_recommender, reference_topk
from exporters.session import ExportSession


@pytest.fixture(scope="module")
def interactions() -> Interactions:
    return generate_interactions(n_users=300, n_items=120, n_clusters=4, seed=3)


@pytest.fixture(scope="module", params=["ials", "item_knn"])
def trained(request: pytest.FixtureRequest, interactions: Interactions, sources: Path) -> Path:
    model = (
        train_ials(interactions, iterations=4)
        if request.param == "ials"
        else train_item_knn(interactions, neighbors=30)
    )
    path = sources / f"{request.param}.npz"
    model.save(path)
    return path


def test_dataset_has_skewed_popularity(interactions: Interactions) -> None:
    popularity = np.sort(np.asarray(interactions.matrix.getnnz(axis=0)))[::-1]
    top_decile = popularity[: len(popularity) // 10].sum()
    assert top_decile > 0.25 * popularity.sum()  # a uniform catalogue would give 10%


def test_ials_ranks_the_users_cluster_above_random(interactions: Interactions) -> None:
    """A sanity check that training learns something: held-out items rank high."""
    rng = np.random.default_rng(0)
    matrix = interactions.matrix.tolil(copy=True)
    held_out = {}
    for user in range(matrix.shape[0]):
        items = matrix.rows[user]
        if len(items) >= 5:
            item = int(rng.choice(items))
            held_out[user] = item
            matrix[user, item] = 0
    train = Interactions(interactions.user_ids, interactions.item_ids, matrix.tocsr())
    model = train_ials(train, iterations=6)
    users = np.array(sorted(held_out))
    top, _ = reference_topk(model, users, 20)
    hit_rate = np.mean([held_out[u] in row for u, row in zip(users, top, strict=True)])
    assert hit_rate > 2 * 20 / len(interactions.item_ids)


def test_export_passes_topk_parity(
    trained: Path, model_repository: Path, export_session: ExportSession
) -> None:
    result = export_recommender(
        trained, name=f"rec-{trained.stem}", repository=model_repository, session=export_session
    )
    manifest = result.manifest
    assert manifest.parity.passed and manifest.parity.topk_match_rate == 1.0
    assert manifest.recommender is not None
    assert manifest.recommender.max_k == 120  # min(n_items, 1000)
    assert manifest.recommender.user_ids[0] == "user-00000"
    assert manifest.recommender.algorithm == trained.stem


def test_served_lists_exclude_seen_items_and_match_numpy(
    trained: Path, model_repository: Path, export_session: ExportSession, served
) -> None:
    result = export_recommender(
        trained, name=f"rec-{trained.stem}", repository=model_repository, session=export_session
    )
    model = RecommenderModel.load(trained)
    users = np.array([0, 5, 17, 299])
    got = served(
        result.triton_name,
        {RECOMMENDER_INPUT: users.reshape(-1, 1).astype(np.int64)},
        [RECOMMENDER_ITEMS, RECOMMENDER_SCORES],
    )
    items, scores = got[RECOMMENDER_ITEMS], got[RECOMMENDER_SCORES]
    assert items.shape == scores.shape == (4, 120)
    assert items.dtype == np.int64 and scores.dtype == np.float32
    want_items, _ = reference_topk(model, users, 20)
    for row, user in enumerate(users):
        seen = set(model.seen[user].indices.tolist())
        finite = np.isfinite(scores[row])
        # Every unseen item comes first, best first; the seen ones fill the -inf tail.
        assert finite.sum() == 120 - len(seen)
        assert not seen & set(items[row][finite].tolist())
        assert np.all(np.diff(scores[row][finite]) <= 0)
        assert np.isneginf(scores[row][~finite]).all()
        assert items[row][:20].tolist() == want_items[row].tolist()


def test_small_max_k(trained: Path, model_repository: Path, export_session: ExportSession) -> None:
    result = export_recommender(
        trained, name=f"rec-{trained.stem}-k5", repository=model_repository, max_k=5,
        session=export_session,
    )  # fmt: skip
    assert result.manifest.outputs[0].shape == [-1, 5]
    assert result.manifest.parity.passed
