"""Every key of DP-GEN's param schemas is recognised (supported, or refused saying why), and
docs/dpgen-keys.md is the current table."""

from __future__ import annotations

from pathlib import Path

from dpgen_ng.config.dpgen_keys import UNKNOWN, markdown, statuses

DOC = Path(__file__).resolve().parent.parent / "docs" / "dpgen-keys.md"


def test_no_dpgen_key_is_unknown():
    unknown = [f"{section}: {key}" for section, table in statuses().items()
               for key, text in table.items() if text == UNKNOWN]
    assert unknown == []


def test_statuses_say_what_happens():
    run = statuses()["run param (`dpgen run`)"]
    assert run["model_devi_nopbc"] == "supported"
    assert run["fp_params"].startswith("supported with fp_style") and "gaussian" in run["fp_params"]
    assert run["cvasp"].startswith("accepted as false")
    assert "PLUMED" in run["model_devi_plumed"]


def test_doc_table_is_current():
    assert DOC.read_text().strip() == markdown().strip(), f"run: python -m dpgen_ng.config.dpgen_keys > {DOC}"
