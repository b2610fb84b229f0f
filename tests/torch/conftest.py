"""PyTorch runs single-threaded in these tests: tiny models gain nothing from
threads, and on a shared machine OpenMP's spinning threads slow them down
many times over."""

import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def single_thread():
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
