"""choose_band: the uncertain band of cheap scores that the expensive scorer sees, for a budget."""

import numpy as np
import pytest

from phifilter.cascade import cascade_scores, choose_band, in_band


def test_the_band_covers_the_documents_where_cheap_and_full_disagree():
    rng = np.random.default_rng(0)
    cheap = rng.uniform(0, 1, 1000)
    full = cheap.copy()
    # the full model overturns the cheap decision only for cheap scores in [0.55, 0.65]
    flip = (cheap > 0.55) & (cheap < 0.65)
    full[flip] = 1 - full[flip]
    lo, hi = choose_band(cheap, full, 0.2, 0.5, 0.5)
    m = in_band(cheap, (lo, hi))
    assert abs(m.mean() - 0.2) < 0.002
    assert m[flip].all()  # every disagreement is embedded, so the cascade agrees everywhere
    decided = np.where(m, full, cheap) >= 0.5
    assert (decided == (full >= 0.5)).all()
    # a smaller budget holds fewer of them, never more than it can
    lo, hi = choose_band(cheap, full, 0.05, 0.5, 0.5)
    m = in_band(cheap, (lo, hi))
    assert abs(m.mean() - 0.05) < 0.002 and m[flip].sum() == m.sum()


def test_no_disagreement_puts_the_band_at_the_cheap_threshold():
    cheap = np.linspace(0, 1, 101)
    lo, hi = choose_band(cheap, cheap, 0.1, 0.3, 0.3)
    assert lo <= 0.3 <= hi and hi - lo == pytest.approx(0.1, abs=0.011)


def test_edges_and_bad_input():
    x = np.array([0.2, 0.9, 0.5])
    assert not in_band(x, choose_band(x, x, 0.0, 0.5, 0.5)).any()
    assert in_band(x, choose_band(x, x, 1.0, 0.5, 0.5)).all()
    with pytest.raises(ValueError, match="share"):
        choose_band(x, x, 1.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="same length"):
        choose_band(x, x[:2], 0.5, 0.5, 0.5)


def test_cascade_scores_take_the_full_score_inside_the_band_only():
    cheap = np.array([0.1, 0.5, 0.9])
    mask = np.array([False, True, False])
    np.testing.assert_array_equal(cascade_scores(cheap, np.array([0.7]), mask), [0.1, 0.7, 0.9])
    np.testing.assert_array_equal(cascade_scores(cheap, np.array([0.0, 0.3, 1.0]), mask), [0.1, 0.3, 0.9])
    np.testing.assert_array_equal(cascade_scores(cheap, None, mask), cheap)
