"""sw.metrics against independent references (scipy.stats, confusion-count formulas)."""
import numpy as np
import pytest
from scipy import stats

from hw.errors import BinbertError
from sw import metrics as M


def _binary(seed, n=200, p=0.6):
    rng = np.random.default_rng(seed)
    gold = (rng.random(n) < p).astype(int)
    pred = np.where(rng.random(n) < 0.75, gold, 1 - gold)
    return pred, gold


@pytest.mark.parametrize("seed", range(4))
def test_accuracy_mcc_f1_against_references(seed):
    pred, gold = _binary(seed)
    assert M.accuracy(pred, gold) == pytest.approx(np.count_nonzero(pred == gold) / gold.size)
    # MCC of two binary variables is their Pearson correlation (phi coefficient).
    assert M.matthews_corrcoef(pred, gold) == pytest.approx(stats.pearsonr(pred, gold)[0])
    tp = np.sum((pred == 1) & (gold == 1))
    fp = np.sum((pred == 1) & (gold == 0))
    fn = np.sum((pred == 0) & (gold == 1))
    assert M.f1_score(pred, gold) == pytest.approx(2 * tp / (2 * tp + fp + fn))


@pytest.mark.parametrize("seed", range(4))
def test_pearson_spearman_against_scipy(seed):
    rng = np.random.default_rng(seed)
    gold = np.round(rng.uniform(0, 5, 300), 1)  # rounded: many ties for the ranks
    pred = gold + rng.normal(0, 1.5, gold.size)
    pred[::7] = pred[0]  # ties in the predictions too
    assert M.pearson(pred, gold) == pytest.approx(stats.pearsonr(pred, gold)[0], abs=1e-12)
    assert M.spearman(pred, gold) == pytest.approx(stats.spearmanr(pred, gold)[0], abs=1e-12)


def test_degenerate_cases():
    gold = np.array([0, 1, 1, 0])
    const = np.ones(4, dtype=int)
    assert M.matthews_corrcoef(const, gold) == 0.0  # an empty confusion row: GLUE convention
    assert M.f1_score(np.zeros(4, dtype=int), gold) == 0.0
    assert M.pearson(np.ones(4), gold) == 0.0
    assert M.matthews_corrcoef(gold, gold) == pytest.approx(1.0)
    assert M.matthews_corrcoef(1 - gold, gold) == pytest.approx(-1.0)


@pytest.mark.parametrize("task,keys", [("sst2", {"acc"}), ("cola", {"mcc", "acc"}),
                                       ("mrpc", {"acc", "f1"}), ("stsb", {"pearson", "spearman"})])
def test_task_metrics_main(task, keys):
    pred, gold = _binary(9)
    out = M.task_metrics(task, pred.astype(float), gold.astype(float))
    assert set(out) == keys | {"main"}
    assert out["main"] == out[M.MAIN_METRIC[task]]


@pytest.mark.parametrize("pred,gold", [([1, 0], [1]), ([], []), ([[1]], [[1]])])
def test_bad_shapes(pred, gold):
    with pytest.raises(BinbertError, match="metrics"):
        M.accuracy(pred, gold)


def test_unknown_task():
    with pytest.raises(BinbertError, match="unknown task 'qqp'"):
        M.task_metrics("qqp", [1], [1])
