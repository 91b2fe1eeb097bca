"""The tiny pipeline that the sw.train tests share: run once for the whole package."""
import pytest

from sw.train.trainer import Trainer
from tests.sw.train.common import _cfg


@pytest.fixture(scope="package")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    tr = Trainer(_cfg(), out, progress=False)
    summary = tr.run()
    return out, tr, summary
