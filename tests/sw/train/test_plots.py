"""sw.train.plots: one panel per stage with a history, nothing for stages without one."""
import json

from sw.train.plots import plot_curves


def _metrics(out, stage, history):
    (out / stage).mkdir(parents=True)
    (out / stage / "metrics.json").write_text(json.dumps({"type": "ternary", "history": history}))


def test_plot_curves_draws_stages_with_a_history(tmp_path):
    _metrics(tmp_path, "a", [{"step": 1, "phase": "intermediate", "loss": 2.0},
                             {"step": 2, "phase": "prediction", "loss": 0.0},
                             {"step": 2, "phase": "prediction", "dev": {"main": 0.5}}])
    _metrics(tmp_path, "b", [])
    dest = plot_curves(tmp_path, ["a", "b", "missing"])
    assert dest == tmp_path / "curve.png" and dest.stat().st_size > 0
    assert not (tmp_path / "curve.png.tmp.png").exists()  # written by swap
    assert not list(tmp_path.glob(".curve.png.*"))  # no temporary left beside it
    assert plot_curves(tmp_path, ["b", "missing"], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
