"""Fixtures the sw tests share."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module's tests: on a shared 2-core machine, tiny tensors
    run far faster without the spin-wait of a second thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
