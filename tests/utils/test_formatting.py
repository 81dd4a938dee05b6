"""Numbers, percentages and markdown tables as the reports print them."""

from __future__ import annotations

from detkd.utils.formatting import MISSING, markdown_table, num, padded_table, pct, table_row, table_rule


def test_num_formats_by_spec_and_scale_and_marks_a_missing_value() -> None:
    assert num(0.61234) == "0.612"
    assert num(20.126, ".1f") == "20.1" and num(1.5, ".3g") == "1.5" and num(2, ".2f") == "2.00"
    assert num(0.51234, ".2f", scale=100.0) == "51.23"
    assert num(None) == MISSING == "-" and num(None, ".2f", scale=100.0) == "-"


def test_pct_in_each_report_s_style() -> None:
    assert pct(0.6523) == "65.2" and pct(0.512345, 2) == "51.23" and pct(0.1234, 0) == "12"
    assert pct(0.6523, std=0.012) == "65.2 ± 1.2" and pct(0.6523, std=None) == "65.2"
    assert pct(0.041, signed=True) == "+4.1" and pct(-0.003, signed=True) == "-0.3" and pct(0.0, signed=True) == "+0.0"
    assert pct(0.432, suffix=" %") == "43.2 %" and pct(0.1234, 0, suffix=" %") == "12 %" and pct(0.25, suffix="%") == "25.0%"


def test_pct_of_a_missing_value_is_a_dash_without_suffix() -> None:
    assert pct(None) == pct(None, 2, std=0.1, signed=True, suffix=" %") == "-"


def test_table_rows_and_rules() -> None:
    assert table_row(["a", "b c", ""]) == "| a | b c |  |"
    assert table_rule(3) == "|---|---|---|"
    assert table_rule(4, right_from=1) == "|---|---:|---:|---:|"
    assert table_rule(3, right_from=2) == "|---|---|---:|" and table_rule(2, right_from=0) == "|---:|---:|"


def test_markdown_table() -> None:
    lines = markdown_table(["model", "AP50"], [["teacher", "80.0"], ["student", "-"]], right_from=1)
    assert lines == ["| model | AP50 |", "|---|---:|", "| teacher | 80.0 |", "| student | - |"]
    assert markdown_table(["a"], []) == ["| a |", "|---|"]


def test_padded_table_lines_up_its_columns() -> None:
    lines = padded_table(["metric", "value (%)"], [["COCO AP", "51.23"], ["VOC07 mAP@0.5 (11-point)", "-"]])
    assert lines == ["| metric                   | value (%) |",
                     "|--------------------------|-----------|",
                     "| COCO AP                  |     51.23 |",
                     "| VOC07 mAP@0.5 (11-point) |         - |"]
    assert padded_table(["a", "b"], [["x", "y"]], right_from=2) == ["| a | b |", "|---|---|", "| x | y |"]
