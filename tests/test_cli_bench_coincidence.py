"""`labctl bench coincidence --json` through the real parser: figures present, no timing checks."""

from __future__ import annotations

import json

from labctl.cli import main


def test_bench_coincidence_json_has_the_figures_and_agreeing_histograms(capsys) -> None:
    code = main(
        [
            "bench",
            "coincidence",
            "--json",
            "--tags",
            "65536",
            "--reference-tags",
            "16384",
            "--pycorrelate-tags",
            "1024",
            "--repeat",
            "1",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("labctl_mtags_per_core", "numpy_mtags_per_core", "ratio_vs_numpy"):
        assert out[key] > 0, key
    assert out["agree_numpy"] is True
    assert out["threads_agree"] is True
    assert out["ptu"]["labctl_mrec_s"] > 0


def test_bench_coincidence_refuses_a_tiny_stream(capsys) -> None:
    assert main(["bench", "coincidence", "--tags", "10"]) != 0
    assert "--tags" in capsys.readouterr().err
