import numpy as np

from learners.blend import Blend


def test_blend_learns_the_better_source():
    rng = np.random.default_rng(0)
    blend = Blend(["weak", "strong"], lr=0.2, init={"weak": 1.0})
    for _ in range(300):
        pos = rng.normal(size=(64, 2))
        neg = rng.normal(size=(64, 5, 2))
        pos[:, 1] += 2.0  # "strong" separates positives from negatives; "weak" barely
        pos[:, 0] += 0.2
        blend.learn(pos, neg)
    assert blend.weights[1] > 2 * blend.weights[0] > 0


def test_scales_normalise_sources_of_different_magnitude():
    rng = np.random.default_rng(1)
    blend = Blend(["big", "small"], lr=0.2, init={"big": 1.0, "small": 1.0})
    for _ in range(200):
        pos = rng.random((32, 2)) * [1000.0, 0.001]
        neg = rng.random((32, 4, 2)) * [1000.0, 0.001]
        pos[:, 1] += 0.001  # only the tiny-valued source is informative
        blend.learn(pos, neg)
    eff = blend.effective()
    assert blend.scales[0] > 100 and blend.scales[1] < 0.01
    assert blend.weights[1] > blend.weights[0]
    assert eff[1] > eff[0]


def test_state_round_trip():
    blend = Blend(["a", "b"])
    blend.learn(np.ones((2, 2)), np.zeros((2, 3, 2)))
    other = Blend(["a", "b"])
    other.load(blend.state())
    np.testing.assert_array_equal(other.effective(), blend.effective())
