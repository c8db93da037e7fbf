"""labctl calc bbm92 / plan-channels: closed forms and validity of the plan."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from labctl.cli import main


def h2(e: float) -> float:
    return 0.0 if e in (0.0, 1.0) else -e * math.log2(e) - (1 - e) * math.log2(1 - e)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["calc", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bbm92_is_the_physics_md_formula(capsys) -> None:
    out = run_json(capsys, "bbm92", "--sifted-hz", "2500", "--qber", "0.03", "--qber-phase", "0.05")
    expected = 2500 * (1 - 1.2 * h2(0.03) - h2(0.05))
    assert out["skr_bps"] == pytest.approx(expected, rel=1e-12)


def test_bbm92_from_visibility_and_own_ec_efficiency(capsys) -> None:
    out = run_json(
        capsys, "bbm92", "--sifted-hz", "1000", "--visibility", "0.9", "--ec-efficiency", "1.0"
    )
    assert out["qber_bit"] == pytest.approx(0.05)
    assert out["skr_bps"] == pytest.approx(1000 * (1 - 2 * h2(0.05)), rel=1e-12)
    # above the threshold the key is zero, not negative
    out = run_json(capsys, "bbm92", "--sifted-hz", "1000", "--qber", "0.2")
    assert out["skr_bps"] == 0.0 and out["qber_threshold"] < 0.2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sifted-hz", "-1", "--qber", "0.1"], "--sifted-hz"),
        (["--sifted-hz", "10", "--qber", "1.5"], "--qber"),
        (["--sifted-hz", "10", "--qber", "0.1", "--ec-efficiency", "0.9"], "--ec-efficiency"),
        (["--sifted-hz", "10", "--visibility", "nan"], "--visibility"),
    ],
)
def test_bbm92_bad_input_names_the_option(capsys, argv: list[str], message: str) -> None:
    assert main(["calc", "bbm92", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("users", "channels"), [(4, 6)])
def test_plan_connects_every_pair_of_users(capsys, users: int, channels: int) -> None:
    out = run_json(capsys, "plan-channels", "--users", str(users))
    assert out["channels"] == channels and out["single_state_channels"] == users * (users - 1)
    labels = {int(u): set(v) for u, v in out["assignment"].items()}
    assert sum(len(v) for v in labels.values()) == channels
    all_labels = [x for v in labels.values() for x in v]
    assert len(all_labels) == len(set(all_labels)) and not {0, 10} & set(all_labels)
    for u, v in itertools.combinations(range(users), 2):
        assert any(x + y in (0, 10, 20) for x in labels[u] for y in labels[v]), (u, v)
    assert out["uncovered_user_pairs"] == []


def test_plan_bad_input(capsys) -> None:
    assert main(["calc", "plan-channels", "--users", "1"]) == 2
    assert "--users" in capsys.readouterr().err
    assert main(["calc", "plan-channels", "--users", "3", "--pumps", "5", "5"]) == 2
    assert "--pumps" in capsys.readouterr().err
