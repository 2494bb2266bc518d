"""``results.csv`` after an interruption: a line cut short is no row, and rows appended later
start on a line of their own; cells with line breaks and commas come back as written."""

from __future__ import annotations

from pyro_avss.evaluation.results_csv import read_results, write_results


def _row(spec_id, error=""):
    return {"id": spec_id, "system": "switching", "source": 1, "status": "ok", "si_sdri": 7.25, "error": error}


def test_a_line_cut_short_is_not_read_and_is_cut_off_before_the_next_rows(tmp_path):
    path = tmp_path / "results.csv"
    write_results(path, [_row("a"), _row("b")])
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[-1][:25])    # a third row, cut short
    assert [r["id"] for r in read_results(path)] == ["a", "b"]
    write_results(path, [_row("c")])
    rows = read_results(path)
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[2]["si_sdri"] == 7.25
    assert path.read_bytes().startswith(whole) and path.read_bytes().count(b"\n") == 4


def test_cells_with_line_breaks_and_commas_come_back_whole(tmp_path):
    path = tmp_path / "results.csv"
    error = "decoder failed:\nline two, with a comma\r\nand \u2028 a separator"
    write_results(path, [_row("a", error)])
    write_results(path, [_row("b")])
    rows = read_results(path)
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["error"] == error
    write_results(path, rows[:1], append=False)                           # a rewrite keeps them too
    assert [r["error"] for r in read_results(path)] == [error]
    assert not list(tmp_path.glob("*.tmp"))
