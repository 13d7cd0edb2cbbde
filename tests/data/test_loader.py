"""TokenWindows: unmasked batches keep their (seed, step) contract exactly (the trainer's exact-resume test
depends on it), and a label mask turns exactly the masked targets into the ignore index."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.data.loader import IGNORE_INDEX, TokenWindows
from lmforge.errors import DataError

N, T = 5000, 16


def positions():
    return np.arange(N, dtype=np.uint16)  # token value = its position, so a row reveals where it came from


def test_unmasked_batch_is_the_seed_step_contract():
    tw = TokenWindows(positions(), T)
    for seed, step in [(0, 0), (7, 3), (123, 9999)]:
        x, y = tw.batch(seed, step, 8)
        starts = np.random.default_rng([seed, step]).integers(0, N - T - 1, size=8)
        expected = np.stack([np.arange(s, s + T + 1) for s in starts])
        assert x.dtype == y.dtype == torch.int64
        assert np.array_equal(x.numpy(), expected[:, :-1]) and np.array_equal(y.numpy(), expected[:, 1:])


def test_mask_sets_ignore_index_only_on_masked_targets():
    tokens = positions()
    mask = ((tokens % 3) != 0).astype(np.uint8)  # planted: every third position is not a target
    plain, masked = TokenWindows(tokens, T), TokenWindows(tokens, T, mask)
    for step in range(5):
        (x0, y0), (x1, y1) = plain.batch(4, step, 6), masked.batch(4, step, 6)
        assert torch.equal(x0, x1)  # inputs untouched, same windows
        expected = torch.where(y0 % 3 != 0, y0, torch.full_like(y0, IGNORE_INDEX))
        assert torch.equal(y1, expected)
    for (x0, y0), (x1, y1) in zip(plain.sequential(4, 800), masked.sequential(4, 800)):
        assert torch.equal(x0, x1)
        assert torch.equal(y1, torch.where(y0 % 3 != 0, y0, torch.full_like(y0, IGNORE_INDEX)))
    kept = masked.targets(800)
    assert len(kept) > 0 and (kept % 3 != 0).all()
    assert np.array_equal(kept, plain.targets(800)[plain.targets(800) % 3 != 0])


def test_ignore_index_is_what_torch_cross_entropy_skips():
    tokens = positions() % 50
    mask = (np.arange(N) % 2).astype(np.uint8)
    x, y = TokenWindows(tokens, T, mask).batch(0, 0, 4)
    logits = torch.randn(4, T, 50)
    loss = F.cross_entropy(logits.reshape(-1, 50), y.reshape(-1))  # default ignore_index
    keep = y.reshape(-1) != IGNORE_INDEX
    assert IGNORE_INDEX == torch.nn.CrossEntropyLoss().ignore_index
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 50)[keep], y.reshape(-1)[keep]))


def test_bad_masks_are_data_errors():
    with pytest.raises(DataError, match="one value per token"):
        TokenWindows(positions(), T, np.ones(N - 1, dtype=np.uint8))
    with pytest.raises(DataError, match="marks no token"):
        TokenWindows(positions(), T, np.zeros(N, dtype=np.uint8))
