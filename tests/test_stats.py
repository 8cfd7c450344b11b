"""fedvsr.stats against scipy.stats and hand-worked numbers."""

from __future__ import annotations

import math

import pytest
from scipy import stats as st

from fedvsr.stats import compare, holm, mean_interval, paired_test, tie_set, welch_test

A = {0: 25.61, 1: 25.48, 2: 25.55, 3: 25.70}
B = {0: 25.40, 1: 25.41, 2: 25.37, 3: 25.52}


def test_mean_interval_is_the_student_t_interval():
    iv = mean_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t(2, 0.975) = 4.302652729749464, half = 4.3026.../sqrt(3) = 2.4841...
    assert iv.mean == 2.0 and iv.std == pytest.approx(1.0) and iv.n == 3
    assert iv.half == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-12)
    assert (iv.low, iv.high) == pytest.approx(st.t.interval(0.95, 2, loc=2.0, scale=1 / math.sqrt(3)))


def test_one_value_has_no_interval():
    iv = mean_interval([25.5])
    assert iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.high)
    assert iv.text() == "25.50 (n=1, no interval)"


def test_paired_test_matches_scipy_ttest_rel():
    comp = paired_test(A, B)
    ref = st.ttest_rel(list(A.values()), list(B.values()))
    assert comp.paired and comp.diff.n == 4
    assert comp.diff.mean == pytest.approx(0.16)
    assert comp.p == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (comp.diff.low, comp.diff.high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_paired_test_uses_only_the_shared_seeds():
    comp = paired_test({**A, 9: 99.0}, B)
    assert comp.diff.n == 4 and comp.diff.mean == pytest.approx(0.16)


def test_welch_test_matches_scipy():
    a, b = [25.61, 25.48, 25.55], [25.40, 25.41, 25.37, 25.52, 25.33]
    comp = welch_test(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert not comp.paired
    assert comp.p == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (comp.diff.low, comp.diff.high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_compare_pairs_when_two_seeds_are_shared_and_falls_back_to_welch():
    assert compare(A, B).paired
    assert not compare({0: 1.0, 1: 2.0}, {5: 1.5, 6: 2.5}).paired


def test_identical_pairs_are_a_certain_tie_and_a_constant_gap_certain():
    assert paired_test({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).p == 1.0
    assert paired_test({0: 1.5, 1: 2.5}, {0: 1.0, 1: 2.0}).p == 0.0


def test_holm_adjusts_step_down_and_keeps_order():
    # sorted 0.01, 0.02, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.02 = 0.04, 1 * 0.04 = 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    adj = holm([math.nan, 0.01])
    assert math.isnan(adj[0]) and adj[1] == pytest.approx(0.01)


def test_tie_set_marks_the_indistinguishable_points():
    points = {
        "a": A,
        "b": B,  # clearly below a (paired p ~ 0.016 before correction)
        "c": {0: 25.60, 1: 25.50, 2: 25.52, 3: 25.69},  # within a's noise
    }
    ranked = tie_set(points)
    assert [r.name for r in ranked] == ["a", "c", "b"]
    assert ranked[0].tie is True
    assert ranked[1].tie is True
    assert ranked[2].tie is False
    p_b = st.ttest_rel(list(A.values()), list(B.values())).pvalue
    p_c = st.ttest_rel(list(A.values()), list(points["c"].values())).pvalue
    assert p_b < p_c  # Holm: the smaller p-value is multiplied by the 2 comparisons
    assert ranked[2].p_adjusted == pytest.approx(min(1.0, 2 * p_b))


def test_tie_set_with_single_runs_cannot_test():
    ranked = tie_set({"x": {0: 25.5}, "y": {0: 25.4}})
    assert ranked[0].tie is True and ranked[1].tie is None


def test_tie_set_minimises_for_loss():
    assert tie_set({"lo": {0: 0.1, 1: 0.11}, "hi": {0: 0.2, 1: 0.21}}, mode="min")[0].name == "lo"


def test_verdict_words():
    from fedvsr.stats import verdict

    up, down = paired_test(A, B), paired_test(B, A)
    assert verdict(up, up.p) == "better" and verdict(down, down.p) == "worse"
    assert verdict(up, 0.2) == "tie"  # after correction: not below 0.05
    assert verdict(up, up.p, mode="min") == "worse"  # a higher loss is worse
    assert verdict(paired_test({0: 1.0}, {0: 2.0}), math.nan) == "untested"


def test_decimals_show_the_narrowest_interval_and_the_closest_means():
    from fedvsr.stats import decimals_for

    wide = [mean_interval([25.0, 25.2]), mean_interval([26.0, 26.2])]
    assert decimals_for(wide) == 2
    close = [mean_interval([27.6600, 27.6624]), mean_interval([27.6640, 27.6664])]  # half 0.015, means 0.004 apart
    assert decimals_for(close) == 3
    assert decimals_for([mean_interval([25.61])]) == 2  # nothing to resolve
    assert decimals_for([mean_interval([1.0]), mean_interval([1.0 + 1e-12])]) == 2  # float noise is no gap
