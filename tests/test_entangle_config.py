"""The [entanglement] section: the shipped network loads, every mistake names its key."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from labctl.bench import sim_specs
from labctl.config import CONFIG_DIR, ConfigError, load_bench, parse_bench
from models.drift import DriftParams

ENTANGLEMENT = CONFIG_DIR / "entanglement_sim.toml"
ISAQN = CONFIG_DIR / "isaqn_sim.toml"
SHIPPED: dict[str, Any] = tomllib.loads(ENTANGLEMENT.read_text(encoding="utf-8"))


def shipped() -> dict[str, Any]:
    """A fresh, mutable copy of the shipped entanglement bench."""
    return copy.deepcopy(SHIPPED)


def channel(data: dict[str, Any], label: int) -> dict[str, Any]:
    return next(c for c in data["entanglement"]["channels"] if c["label"] == label)


def error_for(data: dict[str, Any], key: str) -> str:
    """Parse ``data``; it must fail with a message naming the file and ``key``."""
    with pytest.raises(ConfigError) as info:
        parse_bench(data, ENTANGLEMENT)
    message = str(info.value)
    assert message.startswith(f"{ENTANGLEMENT}: {key}: "), message
    assert info.value.key == key
    return message


# --------------------------------------------------------------------------- the shipped bench


def test_shipped_bench_loads() -> None:
    config = load_bench(ENTANGLEMENT)
    ent = config.entanglement
    assert ent is not None and config.isaqn is None
    assert ent.tec == "tec1" and ent.reference_tagger == "tdc1"
    assert ent.pump_labels == (0, 10)
    assert [p.laser for p in ent.pumps] == ["pump0", "pump10"]
    assert [u.name for u in ent.users] == ["alice", "bob", "carol", "dave"]
    assert [u.interferometer for u in ent.users] == [
        ("awg1", 1),
        ("awg1", 2),
        ("awg2", 1),
        ("awg2", 2),
    ]
    assert (ent.window_ps, ent.bin_ps, ent.max_delay_ps) == (300, 10, 60_000)
    assert ent.interferometer_delay_ps == 800.0
    assert ent.scan_steps == 9 and ent.max_drift_ppm == 5.0
    assert ent.source == "pairs"  # the default
    assert ent.channel(24).user == "bob" and ent.channel(24).input == 3
    with pytest.raises(KeyError):
        ent.channel(99)


def test_shipped_links_cover_every_user_pair() -> None:
    ent = load_bench(ENTANGLEMENT).entanglement
    assert ent is not None
    links = [(k.user_a, k.user_b, k.channel_a, k.channel_b) for k in ent.links()]
    assert links == [
        ("alice", "bob", 4, 6),
        ("alice", "carol", 4, -4),
        ("alice", "dave", 4, 16),
        ("bob", "carol", 24, -4),
        ("bob", "dave", 6, 14),
        ("carol", "dave", -4, 14),
    ]
    # label sums 0 and 20 come from one pump, 10 from both (physics.md section 2)
    for k in ent.links():
        total = k.channel_a + k.channel_b
        expected = {0: "degenerate pump 0", 10: "nondegenerate", 20: "degenerate pump 10"}
        assert k.process == expected[total], k
    assert ent.links()[0].process == "nondegenerate"
    assert ent.uncovered_user_pairs() == ()


def test_shipped_taggers_reference_first() -> None:
    ent = load_bench(ENTANGLEMENT).entanglement
    assert ent is not None
    assert ent.taggers == ("tdc1", "tdc2")
    assert {c.label for c in ent.channels if c.tagger == "tdc2"} == {-4, 14, 16}


def test_reference_tagger_comes_first_even_when_it_sorts_last() -> None:
    data = shipped()
    data["entanglement"]["reference_tagger"] = "tdc2"
    ent = parse_bench(data, ENTANGLEMENT).entanglement
    assert ent is not None and ent.taggers == ("tdc2", "tdc1")


def test_shipped_sim_physics_match_the_file() -> None:
    ent = load_bench(ENTANGLEMENT).entanglement
    assert ent is not None and ent.sim is not None
    sim = ent.sim
    assert [(p.label, p.laser, p.resonance_nm) for p in sim.pumps] == [
        (0, "pump0", 1550.12),
        (10, "pump10", 1540.56),
    ]
    assert sim.tec == "tec1"
    assert sim.reference_temperature_c == 25.0  # defaults to ring_temperature_c
    assert sim.thermo_optic_hz_per_k == -2.5e9 and sim.linewidth_hz == 200e6
    assert sim.degenerate_hz_per_mw2 == 3e6 and sim.nondegenerate_hz_per_mw2 == 6e6
    assert sim.franson_visibility == 0.98
    assert sim.interferometer_delay_ps == 800.0  # from [entanglement]

    chans = {c.label: c for c in sim.channels}
    assert list(chans) == [4, 6, 24, -4, 14, 16]
    assert chans[24].transmission == 0.08 and chans[24].fibre_m == 5.9
    assert chans[16].transmission == 0.12 and chans[-4].fibre_m == 2.1
    assert chans[4].transmission == 0.1  # the section default
    for c in chans.values():
        assert c.dead_time_ps == 50_000.0  # dead_time_ns = 50.0
        assert c.detector_efficiency == 0.85 and c.dark_hz == 100.0
        assert c.jitter_ps == 30.0 and c.noise_hz_per_mw == 500.0
        assert c.latency_ps == 0.0  # not in the file: the built-in default
    assert (chans[14].user, chans[14].tagger, chans[14].input) == ("dave", "tdc2", 2)

    users = {u.name: u for u in sim.users}
    offsets = {name: u.phase_offset_rad for name, u in users.items()}
    assert offsets == {"alice": 0.3, "bob": -1.2, "carol": 2.0, "dave": 0.7}
    for u in users.values():
        assert u.rad_per_v == pytest.approx(math.pi)  # volts_per_2pi = 2.0
        # the project's drift model with its default parameters, driven by the bench's room
        assert u.phase_drift == "model" and u.drift is None and u.drift_rad2_per_s == 0.0
    assert users["carol"].phase_port == ("awg2", 1)


def test_sim_user_rad_per_v_follows_volts_per_2pi_unless_given() -> None:
    data = shipped()
    data["entanglement"]["users"]["alice"]["volts_per_2pi"] = 4.0
    data["entanglement"]["sim"]["users"]["bob"]["rad_per_v"] = 1.5
    del data["entanglement"]["sim"]["users"]["dave"]
    ent = parse_bench(data, ENTANGLEMENT).entanglement
    assert ent is not None and ent.sim is not None
    users = {u.name: u for u in ent.sim.users}
    assert users["alice"].rad_per_v == pytest.approx(math.pi / 2)
    assert users["bob"].rad_per_v == 1.5
    assert users["dave"].phase_offset_rad == 0.0 and users["dave"].drift_rad2_per_s == 0.0
    assert users["dave"].phase_drift == "random_walk"  # the default without a table


def test_sim_specs_feed_the_taggers_from_the_pair_source() -> None:
    config = load_bench(ENTANGLEMENT)
    specs = {s.name: s for s in sim_specs(config)}
    assert set(specs) == {
        *("pump0", "pump10", "tec1", "awg1", "awg2", "tdc1", "tdc2"),
        *("wm0", "wm10", "scope1", "scope2"),  # the loops' wavemeters and reference scopes
    }
    assert dict(specs["tdc1"].options) == {
        "source": "pairs",
        "tagger_jitter_ps": 4.0,
        "buffer_s": 2.0,
    }
    assert dict(specs["tdc2"].options) == {
        "source": "pairs",
        "tagger_jitter_ps": 4.0,
        "buffer_s": 2.0,
        "clock_offset_s": 0.0123,
        "clock_drift_ppm": 2.5,
        "clock_drift_rate_ppm_per_s": 0.001,
    }
    for name in ("pump0", "pump10", "tec1", "awg1", "awg2"):
        assert "source" not in specs[name].options, name
    assert "source" not in config.instruments["tdc1"].sim  # the bench config is not changed


def test_sim_specs_source_from_the_section_or_the_tagger() -> None:
    data = shipped()
    data["entanglement"]["source"] = "ring"
    data["instruments"]["tdc2"]["sim"]["source"] = "other"
    wiring = data["bench"]["wiring"]  # the reference photodiodes follow the source's name
    for dest, src in wiring.items():
        wiring[dest] = src.replace("pairs:", "ring:")
    specs = {s.name: s for s in sim_specs(parse_bench(data, ENTANGLEMENT))}
    assert specs["tdc1"].options["source"] == "ring"
    assert specs["tdc2"].options["source"] == "other"


def test_sim_specs_without_a_twin_leave_the_taggers_alone() -> None:
    data = shipped()
    del data["entanglement"]["sim"]
    wiring = data["bench"]["wiring"]  # no twin: no reference light to wire
    for dest in [d for d, src in wiring.items() if src.startswith("pairs:")]:
        del wiring[dest]
    config = parse_bench(data, ENTANGLEMENT)
    assert config.entanglement is not None and config.entanglement.sim is None
    specs = {s.name: s for s in sim_specs(config)}
    assert "source" not in specs["tdc1"].options and "source" not in specs["tdc2"].options


def test_two_users_without_a_correlated_pair_are_reported() -> None:
    data = shipped()
    # dave's 16 -> 17: alice (4) then shares nothing with dave (4 + 14 = 18, 4 + 17 = 21)
    channel(data, 16)["label"] = 17
    data["entanglement"]["sim"]["channels"][-1]["label"] = 17
    ent = parse_bench(data, ENTANGLEMENT).entanglement
    assert ent is not None
    assert ent.uncovered_user_pairs() == (("alice", "dave"),)
    assert ("alice", "dave") not in {(k.user_a, k.user_b) for k in ent.links()}
    assert len(ent.links()) == 5


# --------------------------------------------------------------------------- bad input


def _pump_label_as_channel(e: dict[str, Any]) -> None:
    e["channels"][0]["label"] = 10


def _duplicate_channel(e: dict[str, Any]) -> None:
    e["channels"][1]["label"] = 4


def _undeclared_user(e: dict[str, Any]) -> None:
    e["channels"][0]["user"] = "eve"


def _input_out_of_range(e: dict[str, Any]) -> None:
    e["channels"][0]["input"] = 5


def _shared_input(e: dict[str, Any]) -> None:
    e["channels"][1]["input"] = 1  # channel 4 is already on tdc1 input 1


def _channel_on_an_awg(e: dict[str, Any]) -> None:
    e["channels"][0]["tagger"] = "awg1"


def _even_scan_steps(e: dict[str, Any]) -> None:
    e["scan_steps"] = 8


def _window_not_below_the_delay(e: dict[str, Any]) -> None:
    e["window_ps"] = 800


def _one_pump(e: dict[str, Any]) -> None:
    del e["pumps"][1]


def _interferometer_on_a_tagger(e: dict[str, Any]) -> None:
    e["users"]["bob"]["interferometer"] = "tdc1:2"


def _sim_override_unknown_label(e: dict[str, Any]) -> None:
    e["sim"]["channels"][2]["label"] = 99


def _unknown_key(e: dict[str, Any]) -> None:
    e["colour"] = "blue"


def _override_twice(ent: dict[str, Any]) -> None:
    ent["sim"]["channels"].append({"label": 4, "fibre_m": 99.0})


def _awg_channel_3(ent: dict[str, Any]) -> None:
    ent["users"]["alice"]["interferometer"] = "awg1:3"


def _pump_outside_laser_limits(ent: dict[str, Any]) -> None:
    ent["pumps"][0]["wavelength_nm"] = 1560.0


def _ring_outside_tec_limits(ent: dict[str, Any]) -> None:
    ent["ring_temperature_c"] = 80.0


def _resonance_not_a_number(ent: dict[str, Any]) -> None:
    ent["sim"]["resonance_nm"] = [True, 1540.56]


BAD_FOR_THE_INSTRUMENTS = [
    (_override_twice, "entanglement.sim.channels[6].label", "overridden twice"),
    (_awg_channel_3, "entanglement.users.alice.interferometer", "has channels (1, 2)"),
    (_pump_outside_laser_limits, "entanglement.pumps[0].wavelength_nm", "pump0's limits"),
    (_ring_outside_tec_limits, "entanglement.ring_temperature_c", "tec1's limits"),
    (_resonance_not_a_number, "entanglement.sim.resonance_nm", "expected [nm, nm]"),
]


BAD: list[tuple[Callable[[dict[str, Any]], None], str, str]] = [
    (_pump_label_as_channel, "entanglement.channels[0].label", "is a pump"),
    (_duplicate_channel, "entanglement.channels[1].label", "listed twice"),
    (_undeclared_user, "entanglement.channels[0].user", "'eve'"),
    (_input_out_of_range, "entanglement.channels[0].input", "(1, 2, 3, 4)"),
    (_shared_input, "entanglement.channels[1].input", "already has a channel"),
    (_channel_on_an_awg, "entanglement.channels[0].tagger", "tdc instrument"),
    (_even_scan_steps, "entanglement.scan_steps", "odd"),
    (_window_not_below_the_delay, "entanglement.window_ps", "got 800"),
    (_one_pump, "entanglement.pumps", "exactly 2"),
    (_interferometer_on_a_tagger, "entanglement.users.bob.interferometer", "not a declared awg"),
    (_sim_override_unknown_label, "entanglement.sim.channels[2].label", "99"),
    (_unknown_key, "entanglement.colour", "unknown key"),
]
BAD += BAD_FOR_THE_INSTRUMENTS


@pytest.mark.parametrize(
    ("mutate", "key", "problem"), BAD, ids=[m.__name__.strip("_") for m, _, _ in BAD]
)
def test_bad_entanglement_section_names_the_key(
    mutate: Callable[[dict[str, Any]], None], key: str, problem: str
) -> None:
    data = shipped()
    mutate(data["entanglement"])
    message = error_for(data, key)
    assert problem in message, message


def test_window_equal_to_bin_is_accepted_but_not_below() -> None:
    data = shipped()
    data["entanglement"]["window_ps"] = 10
    ent = parse_bench(data, ENTANGLEMENT).entanglement
    assert ent is not None and ent.window_ps == ent.bin_ps == 10
    data["entanglement"]["window_ps"] = 9
    error_for(data, "entanglement.window_ps")


def test_three_taggers_are_refused() -> None:
    data = shipped()
    data["instruments"]["tdc3"] = copy.deepcopy(data["instruments"]["tdc2"])
    channel(data, 16)["tagger"] = "tdc3"
    message = error_for(data, "entanglement.channels")
    assert "3 taggers" in message


def test_isaqn_and_entanglement_in_one_file_are_refused() -> None:
    data = shipped()
    isaqn = tomllib.loads(ISAQN.read_text(encoding="utf-8"))
    data["isaqn"] = isaqn["isaqn"]
    data["bench"]["wiring"] = isaqn["bench"]["wiring"]
    for name, table in isaqn["instruments"].items():
        data["instruments"].setdefault(name, table)  # awg1/awg2: the same model in both
    message = error_for(data, "entanglement")
    assert "[isaqn] or [entanglement]" in message


# --------------------------------------------------------------------------- interferometer drift


def _sim_users(data: dict[str, Any]) -> dict[str, Any]:
    ent = parse_bench(data, ENTANGLEMENT).entanglement
    assert ent is not None and ent.sim is not None
    return {u.name: u for u in ent.sim.users}


def test_sim_user_drift_table_overrides_drift_params() -> None:
    data = shipped()
    users_raw = data["entanglement"]["sim"]["users"]
    users_raw["alice"]["drift"] = {"thermal_lag_s": 900, "burst_rate_per_hour": 0.0}
    users_raw["bob"] = {"phase_drift": "random_walk", "drift_rad2_per_s": 2e-3}
    users = _sim_users(data)
    assert users["alice"].phase_drift == "model"
    assert users["alice"].drift == DriftParams(thermal_lag_s=900.0, burst_rate_per_hour=0.0)
    assert users["carol"].drift is None  # model with every default
    assert users["bob"].phase_drift == "random_walk" and users["bob"].drift_rad2_per_s == 2e-3
    assert users["bob"].drift is None


def _drift_unknown_key(users: dict[str, Any]) -> None:
    users["alice"]["drift"] = {"thermal_lag_minutes": 30}


def _drift_bad_value(users: dict[str, Any]) -> None:
    users["bob"]["drift"] = {"burst_rate_per_hour": 1.0, "thermal_lag_s": -5.0}


def _drift_not_a_number(users: dict[str, Any]) -> None:
    users["carol"]["drift"] = {"tick_s": "1 s"}


def _drift_not_a_table(users: dict[str, Any]) -> None:
    users["carol"]["drift"] = 3.0


def _walk_with_the_model(users: dict[str, Any]) -> None:
    users["dave"]["drift_rad2_per_s"] = 0.001


def _unknown_drift_choice(users: dict[str, Any]) -> None:
    users["dave"]["phase_drift"] = "brownian"


def _drift_table_with_the_walk(users: dict[str, Any]) -> None:
    users["alice"] = {"phase_drift": "random_walk", "drift": {"thermal_lag_s": 900.0}}


BAD_DRIFT: list[tuple[Callable[[dict[str, Any]], None], str, str]] = [
    (
        _drift_unknown_key,
        "entanglement.sim.users.alice.drift.thermal_lag_minutes",
        "unknown key; expected one of ambient_mean_c, ",  # lists the DriftParams fields
    ),
    (_drift_bad_value, "entanglement.sim.users.bob.drift.thermal_lag_s", "got -5.0, expected > 0"),
    (_drift_not_a_number, "entanglement.sim.users.carol.drift.tick_s", "expected a number"),
    (_drift_not_a_table, "entanglement.sim.users.carol.drift", "expected a table"),
    (_walk_with_the_model, "entanglement.sim.users.dave.drift_rad2_per_s", "ambiguous"),
    (_unknown_drift_choice, "entanglement.sim.users.dave.phase_drift", "'random_walk', 'model'"),
    (_drift_table_with_the_walk, "entanglement.sim.users.alice.drift", 'phase_drift = "model"'),
]


@pytest.mark.parametrize(
    ("mutate", "key", "problem"), BAD_DRIFT, ids=[m.__name__.strip("_") for m, _, _ in BAD_DRIFT]
)
def test_bad_interferometer_drift_names_the_key(
    mutate: Callable[[dict[str, Any]], None], key: str, problem: str
) -> None:
    data = shipped()
    mutate(data["entanglement"]["sim"]["users"])
    message = error_for(data, key)
    assert problem in message, message


def test_every_drift_params_field_is_a_valid_drift_key() -> None:
    """Each field accepts its own default (so the table can spell out any of them)."""
    data = shipped()
    defaults = DriftParams()
    table = {
        name: float(getattr(defaults, name))
        for name in DriftParams.__dataclass_fields__
        if getattr(defaults, name) is not None
    }
    data["entanglement"]["sim"]["users"]["alice"]["drift"] = table
    assert _sim_users(data)["alice"].drift == defaults
