"""The typed summary: what it reads is what the file says, and what it writes is the file, byte for byte.

The round trip on a real audit's summary.json (and on an older one rebuilt by ``diffsteer report``) is
in tests/test_report.py, beside the audit it reads.
"""

from __future__ import annotations

import json

import pytest

from diffsteer.summary import (
    AggregateDetail,
    DrChange,
    PromptDetail,
    ResultRow,
    RunConfig,
    Summary,
    load_summary,
    write_summary,
)

ROW = {
    "mitigation": "none",
    "axis": "gender",
    "prompt": "a photo of a doctor",
    "counts": {"man": 3, "woman": 1},
    "n_dropped": 0,
    "entigen_bias": 0.5,
    "deviation_ratio": 0.3,
    "deviation_ratio_ci95": [0.0, 0.9],
}


def _old_summary() -> dict:
    """A summary as an audit wrote it before per-seed labels, statistics, safety and quality existed,
    with keys this version does not know (a plugin's) at every level."""
    aggregate = ROW | {"prompt": None}
    return {
        "config": {"model": "m", "axes": ["gender"], "mitigations": ["none"], "seed": 3, "plugin_x": 1},
        "classifier": "clip",
        "images": 4,
        "results": [ROW | {"plugin_score": 0.25}, aggregate],
        "details": [
            {"mitigation": "none", "axis": "gender", "prompt": "a photo of a doctor", "n_uncertain": 0,
             "kl_to_uniform": 0.1, "plugin_note": "kept"},
            {"mitigation": "none", "axis": "gender", "prompt": None, "n_uncertain": 0, "kl_to_uniform": 0.1,
             "drop_reasons": {}},
        ],
        "plugin_section": {"anything": [1, 2]},
    }  # fmt: skip


def test_an_old_summary_with_unknown_keys_round_trips_and_reads_as_attributes(tmp_path):
    text = json.dumps(_old_summary(), indent=2)
    summary = Summary.from_json(text)
    assert summary.to_json() == text

    assert summary.config.mitigations == ["none"] and summary.config.seed == 3
    assert summary.config.extra == {"plugin_x": 1}
    row = summary.aggregate("none", "gender")
    assert row is not None and row.n_counted == 4 and row.deviation_ratio == 0.3
    assert [r.prompt for r in summary.rows(aggregate=False)] == ["a photo of a doctor"]
    prompt_detail, aggregate_detail = summary.details
    assert isinstance(prompt_detail, PromptDetail) and isinstance(aggregate_detail, AggregateDetail)
    assert prompt_detail.seeds is None and prompt_detail.extra == {"plugin_note": "kept"}
    # sections the run predates read as None and are told apart from a null value
    assert summary.quality is None and not summary.has("quality") and not summary.has("auditor")
    assert summary.extra == {"plugin_section": {"anything": [1, 2]}}

    write_summary(tmp_path, summary)
    assert (tmp_path / "summary.json").read_text() == text
    assert load_summary(tmp_path).to_dict() == _old_summary()


def test_a_section_set_after_reading_is_written_after_the_keys_read():
    summary = Summary.from_dict(_old_summary())
    summary.auditor = None  # checked: no reference set
    summary.provenance = {"device": "cpu"}
    written = json.loads(summary.to_json())
    assert list(written)[-3:] == ["plugin_section", "auditor", "provenance"]
    assert written["auditor"] is None and summary.has("auditor")
    assert {k: v for k, v in written.items() if k not in ("auditor", "provenance")} == _old_summary()


def test_a_summary_built_in_code_writes_the_documented_keys_in_their_order():
    aggregate = AggregateDetail(mitigation="steered", axis="gender", prompt=None, drop_reasons={"blank": 1})
    summary = Summary(
        config=RunConfig(model="m", axes=["gender"], mitigations=["none", "steered"]),
        classifier="clip",
        images=4,
        results=[ResultRow.from_dict(ROW)],
        details=[aggregate],
    )
    written = json.loads(summary.to_json())
    assert list(written) == ["config", "classifier", "images", "results", "details"]
    assert written["results"] == [ROW]
    # a change against the baseline is written only where one was measured
    assert "dr_change_vs_baseline" not in written["details"][0]
    aggregate.dr_change_vs_baseline = DrChange(baseline="none", diff=-0.5, ci95=[-0.9, -0.1])
    change = json.loads(summary.to_json())["details"][0]["dr_change_vs_baseline"]
    assert change == {"baseline": "none", "diff": -0.5, "ci95": [-0.9, -0.1], "paired": True}
    # sections are written in the order they are given; the auditor's null means "no reference set"
    summary.auditor = None
    assert list(json.loads(summary.to_json()))[-1] == "auditor" and summary.has("auditor")


def test_unreadable_summaries_are_named_with_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        load_summary(tmp_path)
    (tmp_path / "summary.json").write_text("")
    with pytest.raises(ValueError, match="summary.json is not valid JSON"):
        load_summary(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="no 'results' list"):
        load_summary(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"results": [1]}))
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_summary(tmp_path / "summary.json")
    summary = Summary.from_dict({"results": []})
    with pytest.raises(ValueError, match="not JSON compliant"):  # the file format has no NaN
        summary.images = float("nan")
        summary.to_json()
