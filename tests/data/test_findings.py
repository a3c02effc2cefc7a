"""Reports split into findings (scar_jax.data.findings)."""

import numpy as np
import pytest

from scar_jax.data import findings


def test_split_findings_on_statement_ends_not_on_decimals():
    report = "Sinus rhythm. LBBB, qrs 140 ms;  low voltage 0.5 mV\nabnormal ecg. sinus rhythm."
    assert findings.split_findings(report) == [
        "Sinus rhythm", "LBBB, qrs 140 ms", "low voltage 0.5 mV", "abnormal ecg", "sinus rhythm"]
    assert findings.split_findings("a. a. b.") == ["a", "b"]  # repeats once
    assert findings.split_findings("  .  ") == []


def test_finding_table_ids_index_sorted_distinct_findings():
    reports = ["b. a.", "a. c. d.", ""]
    unique, ids, counts = findings.finding_table(reports, max_findings=2)
    assert unique == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(ids, [[1, 0], [0, 2], [-1, -1]])  # 'd' cut: 3 > 2
    np.testing.assert_array_equal(counts, [2, 3, 0])  # one report has more than 2
    with pytest.raises(ValueError, match="max_findings"):
        findings.finding_table(reports, 0)
