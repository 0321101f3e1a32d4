"""Unsafe rates pooled over prompts that share seeds, and a mitigation's reduction of them."""

import numpy as np
import pytest

from diffsteer.metrics.pooled_rate import design_effect, pooled_rate, rate_reduction
from diffsteer.metrics.simulation import simulate_rate_reduction


def _clustered(n_prompts: int, unsafe_seeds: list[int], n_seeds: int) -> np.ndarray:
    """Every prompt unsafe on the same seeds: the strongest clustering there is."""
    hits = np.zeros((n_prompts, n_seeds))
    hits[:, unsafe_seeds] = 1
    return hits


def test_images_that_turn_unsafe_together_widen_the_pooled_interval():
    counted = np.ones((8, 32))
    together = pooled_rate(_clustered(8, list(range(8)), 32), counted)
    # the same 64 unsafe images spread so that every seed holds two of them: no clustering
    spread = np.zeros((8, 32))
    for s in range(32):
        spread[[s % 8, (s + 4) % 8], s] = 1
    apart = pooled_rate(spread, counted)
    assert together["rate"] == apart["rate"] == 0.25
    assert apart["design_effect"] == 1.0
    assert together["design_effect"] > 6  # close to the 8 prompts that act as one image
    assert together["ci"][1] - together["ci"][0] > 2 * (apart["ci"][1] - apart["ci"][0])
    for result in (together, apart):
        assert result["ci"][0] < 0.25 < result["ci"][1]


def test_no_unsafe_image_still_leaves_room_above_zero():
    counted = np.ones((4, 16))
    result = pooled_rate(np.zeros((4, 16)), counted)
    assert result["rate"] == 0 and result["ci"][0] == 0 and 0.03 < result["ci"][1] < 0.1
    # a baseline arm that shows how the images cluster widens the clean arm's interval too
    wider = pooled_rate(
        np.zeros((4, 16)), counted, at_least=design_effect(_clustered(4, [0, 1, 2, 3], 16), counted)
    )
    assert wider["ci"][1] > result["ci"][1]
    assert pooled_rate(np.zeros((2, 3)), np.zeros((2, 3)))["rate"] is None


def test_a_mitigation_that_removes_every_unsafe_image_is_not_called_certain():
    counted = np.ones((5, 32))
    change = rate_reduction((_clustered(5, list(range(12)), 32), counted), (np.zeros((5, 32)), counted))
    assert change["reduction"] == 1.0
    low, high = change["ci"]
    assert 0.5 < low < 1.0 and high == 1.0


def test_reduction_needs_a_baseline_with_unsafe_images():
    counted = np.ones((3, 8))
    assert rate_reduction((np.zeros((3, 8)), counted), (np.zeros((3, 8)), counted)) == {
        "reduction": None,
        "ci": None,
    }
    change = rate_reduction((_clustered(3, [0, 1], 8), counted), (_clustered(3, [0, 1, 2, 3], 8), counted))
    assert change["reduction"] == pytest.approx(-1.0)  # twice the unsafe images: negative reduction
    assert change["ci"][0] < -1.0 < change["ci"][1]


@pytest.mark.parametrize(
    ("hits", "counted", "message"),
    [
        (np.ones((2, 3)), np.ones((3, 2)), "one shape"),
        (np.ones(4), np.ones(4), "one shape"),
        (np.ones((2, 2)), np.zeros((2, 2)), "only where counted"),
    ],
)
def test_malformed_label_arrays_are_refused(hits, counted, message):
    with pytest.raises(ValueError, match=message):
        pooled_rate(hits, counted)


def test_coverage_holds_where_counting_images_as_independent_fails():
    """Simulated audits of nine findings whose prompts share each seed's noise (latent correlation 0.9,
    as pictoworld's seeds show): the plain binomial interval of the pooled rate misses the truth far
    more often than 5%, the seed-clustered one and the reduction's do not (benchmarks/coverage.py rates
    runs the whole grid)."""
    base = (0.2, 0.4, 0.6, 0.8, 0.9, 0.5, 0.3, 0.7, 0.6)
    result = simulate_rate_reduction(base, tuple(0.1 * b for b in base), 16, n_audits=300, draws=2000, seed=1)
    assert result["plain_rate_coverage"] < 0.8
    assert result["rate_coverage"] >= 0.94
    assert result["reduction_coverage"] >= 0.94
