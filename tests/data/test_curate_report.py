import numpy as np

from frugal_lm.data.curate_report import (
    LENGTH_BINS,
    CurateReport,
    LengthHistogram,
    SourceCounts,
    plot_lengths,
    report_markdown,
    total_of,
)


def _counts(read, bad, removed, kept, flagged=0, reason="not valid JSON (x at column 1)"):
    counts = SourceCounts(read=read, kept=kept, flagged=flagged)
    for _ in range(bad):
        counts.count_bad(reason)
    for step, count in removed.items():
        for _ in range(count):
            counts.count_removed(step)
    return counts


def test_bad_reasons_are_grouped_by_cause_and_totals_add_up():
    first = _counts(10, 2, {"echo": 1, "near-duplicate": 3}, 4, flagged=1)
    second = _counts(5, 1, {"echo": 2}, 2, reason="missing field 'response'")
    assert first.bad_reasons == {"not valid JSON": 2} and first.adds_up() and second.adds_up()
    total = total_of({"a": first, "b": second})
    assert (total.read, total.bad_rows, total.kept, total.flagged) == (15, 3, 6, 1)
    assert total.removed == {"echo": 3, "near-duplicate": 3} and total.adds_up()
    assert total.bad_reasons == {"not valid JSON": 2, "missing field 'response'": 1}
    assert not _counts(10, 0, {}, 9).adds_up()


def test_markdown_has_a_column_per_step_and_a_row_per_source():
    sources = {"a.jsonl": _counts(10, 2, {"echo": 1}, 7)}
    sources["a.jsonl"].format = "alpaca"
    report = CurateReport(settings={}, steps=["echo", "near-duplicate"], sources=sources, total=total_of(sources))
    text = report_markdown(report)
    assert "| source | read | bad rows | echo | near-duplicate | kept | flagged |" in text
    assert "| a.jsonl (alpaca) | 10 | 2 | 1 | 0 | 7 | 0 |" in text
    assert "- not valid JSON: 2" in text


def test_length_histogram_bins_and_plot(tmp_path):
    histogram = LengthHistogram()
    for words in (1, 1, 5, 1000, 10**7):
        histogram.add(words)
    assert histogram.counts.sum() == 5 and histogram.counts[-1] == 1  # past the last bin edge
    assert histogram.counts[np.searchsorted(LENGTH_BINS, 1, side="right")] == 2
    plot_lengths(tmp_path / "lengths.png", histogram, LengthHistogram())
    assert (tmp_path / "lengths.png").read_bytes()[:4] == b"\x89PNG"
