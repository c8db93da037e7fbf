"""The entanglement feed on its own: a clock search that cannot succeed ends with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.tdc import TagBatch
from labctl.config import CONFIG_DIR, load_bench
from labctl.entangle_feed import CLOCK_SEARCH_TIMEOUT_S, EntanglementFeed, FeedError

PS_PER_S = 1_000_000_000_000


def test_unrelated_taggers_end_the_search_with_a_clear_error() -> None:
    """Two taggers whose tags share no photon pairs: after CLOCK_SEARCH_TIMEOUT_S of data the
    feed refuses to wait any longer and names the tagger and what to check."""
    ent = load_bench(CONFIG_DIR / "entanglement_sim.toml").entanglement
    assert ent is not None and len(ent.taggers) == 2
    rng = np.random.default_rng(5)
    feed = EntanglementFeed(ent, where="test")
    inputs = {t: sorted({c.input for c in ent.channels if c.tagger == t}) for t in ent.taggers}
    batch_s = 1.0
    with pytest.raises(FeedError) as err:
        for k in range(int(CLOCK_SEARCH_TIMEOUT_S / batch_s) + 5):
            batches = []
            for name in ent.taggers:  # independent 2 kHz Poisson tags per input
                n = rng.poisson(2000 * batch_s * len(inputs[name]))
                t = np.sort(rng.integers(k * PS_PER_S, (k + 1) * PS_PER_S, n)).astype(np.int64)
                ch = rng.choice(inputs[name], n).astype(np.uint8)
                batches.append((name, TagBatch(ch, t, horizon_ps=(k + 1) * PS_PER_S)))
            feed.push_read(batches)
    text = str(err.value)
    other = next(t for t in ent.taggers if t != ent.reference_tagger)
    assert text.startswith(f"{other}: its clock was not found against {ent.reference_tagger}")
    assert "significance" in text and "max_clock_offset_s" in text
    assert feed.reads >= CLOCK_SEARCH_TIMEOUT_S / batch_s
