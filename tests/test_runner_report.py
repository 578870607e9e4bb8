"""`reasoner report` from two toy runs: a markdown table with both and PNG plots of accuracy vs compute and speedup."""

import json

from evals.runner import evaluate
from reasoner.cli import main
from reasoner.recipe import Recipe

SUITE = ["suite.difficulty=ops=1-2,digits=1", "suite.size=3"]


def test_report_compares_two_toy_runs_in_a_table_and_plots(tmp_path, capsys):
    for name in ("toy-cot", "toy-cot-draft"):
        evaluate(Recipe.load(name, SUITE), tmp_path / name, progress=False)
    assert (
        main(["report", str(tmp_path / "toy-cot"), str(tmp_path / "toy-cot-draft"), "--out", str(tmp_path / "report")])
        == 0
    )
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| toy-cot")]
    assert len(rows) == 2 and "| toy-cot | toy-cot | toy | 3 |" in rows[0] and "1.00x" in rows[0]
    assert (tmp_path / "report" / "report.md").read_text().strip() in printed
    for png in ("accuracy_vs_compute.png", "speedup.png"):
        data = (tmp_path / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    summary = json.loads((tmp_path / "toy-cot-draft" / "summary.json").read_text())
    draft_speed = round(
        json.loads((tmp_path / "toy-cot" / "summary.json").read_text())["s_per_problem"] / summary["s_per_problem"], 3
    )
    assert f"{draft_speed:.2f}x" in rows[1]


def test_report_of_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no summary.json there" in capsys.readouterr().err
