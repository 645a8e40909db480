"""metrics.csv: rows are formatted one way for every model, and read back as written."""

from __future__ import annotations

from rnngen.generate.evaluate import scores_from
from rnngen.metrics import METRICS_COLUMNS, metrics_row, read_metrics, write_metrics


def test_rows_round_trip_with_empty_cells_for_missing_values(tmp_path):
    scores = scores_from(total_nats=20.0, tokens=10, chars=10)
    rows = [
        metrics_row(5, 0.123456, 1.234, 320, 2.5, None, 0.002, 1.5, 0.2, 1234.6),
        metrics_row(10, 0.25, 2.0, 640, None, scores, None, None, None, 0),
    ]
    assert rows[0]["epoch"] == 0.1235 and rows[0]["elapsed_s"] == 1.23 and rows[0]["lr"] == "0.002"
    assert rows[0]["val_loss"] == "" and rows[0]["tokens_per_s"] == 1235
    assert rows[1]["val_loss"] == "2" and rows[1]["train_loss"] == "" and rows[1]["tokens_per_s"] == ""
    path = tmp_path / "metrics.csv"
    write_metrics(path, rows)
    back, damaged = read_metrics(path)
    assert damaged == 0
    assert list(back[0]) == METRICS_COLUMNS
    assert [r["step"] for r in back] == ["5", "10"] and back[1]["val_ppl"] == rows[1]["val_ppl"]
    assert read_metrics(tmp_path / "none.csv") == ([], 0)
