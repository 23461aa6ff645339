import numpy as np

from learners.base import Interactions, ItemMeta
from learners.content import HashedContent, tokens
from learners.recommender import OnlineRecommender


def test_tokens_and_stable_hashing():
    meta = ItemMeta("x", "The Blue-Jazz Night (1999)", ("Jazz", " live "))
    assert tokens(meta) == ["the", "blue", "jazz", "night", "1999", "tag:jazz", "tag:live"]
    a, b = HashedContent(dim=32), HashedContent(dim=32)
    np.testing.assert_array_equal(a.embed(meta), b.embed(meta))
    assert abs(np.linalg.norm(a.embed(meta)) - 1) < 1e-6


def test_similar_items_score_higher():
    content = HashedContent(dim=256)
    metas = [ItemMeta("a", "Space opera", ("scifi", "space")), ItemMeta("b", "Space war", ("scifi", "space")),
             ItemMeta("c", "Love in Paris", ("romance",))]
    content.set_items(np.arange(3), metas)
    scores = content.score(np.array([[0, -1]]), n_items=3)
    assert scores[0, 1] > scores[0, 2]
    pairs = content.score_pairs(np.array([[0, -1]]), np.array([[1, 2]]))
    np.testing.assert_allclose(pairs, scores[:, 1:], rtol=1e-5)


def test_announced_item_ranks_before_its_first_interaction():
    model = OnlineRecommender(seed=0, explore_slots=0)
    catalog = [ItemMeta(f"jazz{i}", f"Jazz record {i}", ("jazz", "music")) for i in range(5)]
    catalog += [ItemMeta(f"metal{i}", f"Metal record {i}", ("metal", "music")) for i in range(5)]
    model.add_items(catalog)
    rows = []
    for u in range(30):
        genre = "jazz" if u % 2 == 0 else "metal"
        rows += [{"user_id": f"u{u}", "item_id": f"{genre}{i}", "ts": float(len(rows) + i)} for i in range(4)]
    for _ in range(5):
        model.learn_many(Interactions.from_records(rows))
    model.add_items([ItemMeta("jazz-new", "Jazz record new", ("jazz", "music")),
                     ItemMeta("metal-new", "Metal record new", ("metal", "music"))])
    model.learn_many(Interactions.from_records([{"user_id": "fan", "item_id": "jazz0", "ts": 1e6}]))
    query = Interactions.from_records([{"user_id": "fan", "item_id": "jazz1", "ts": 1e6}])
    scores, cols = model.score_many(query)
    by_id = dict(zip(model.item_ids(cols).tolist(), scores[0].tolist(), strict=True))
    assert by_id["jazz-new"] > by_id["metal-new"]
