"""How a node selects Rapid (the configuration type picks the actor), the shell's settings
checks, and the merge of separately run scale scenarios. The Rapid actor itself runs in
tests/membership/test_rapid_process.py, five OS processes over ZeroMQ."""

from __future__ import annotations

import json
import pathlib

import pytest

from membership import MembershipActor, MembershipConfig
from membership.rapid import RapidConfig, scenarios
from membership.rapid.actor import RapidMembershipActor, RapidMembershipConfig
from membership.supervisor import membership_props

SEED = "coterie://a@127.0.0.1:7100"


def test_the_configuration_type_selects_the_membership_actor() -> None:
    rapid = membership_props(RapidMembershipConfig(seeds=(SEED,)), 7)
    gossip = membership_props(MembershipConfig(seeds=(SEED,)), 7)
    assert rapid.factory is RapidMembershipActor
    assert gossip.factory is MembershipActor
    with pytest.raises(TypeError, match="not a membership configuration: dict"):
        membership_props({"seeds": [SEED]}, 7)  # type: ignore[arg-type]


def test_rapid_shell_settings_are_checked() -> None:
    config = RapidMembershipConfig(seeds=(SEED,))
    assert config.seeds == (f"{SEED}/user/node",)  # seeds are node supervisor paths
    with pytest.raises(ValueError, match="tick_interval"):
        RapidMembershipConfig(tick_interval=2.0, rapid=RapidConfig(heartbeat_interval=1.0))
    with pytest.raises(ValueError, match="tick_interval"):
        RapidMembershipConfig(tick_interval=0.0)


def _results(path: pathlib.Path, name: str, ok: bool, seed: int = 1) -> str:
    body = {name: {"ok": ok, "members": 10, "timeline": [[0.0, 10, 10, 10, 10]]}}
    body["_meta"] = {"seed": seed, "scale": 1.0, "failed": [] if ok else [name]}
    path.write_text(json.dumps(body))
    return str(path)


def test_merged_runs_keep_every_scenario_and_every_failure(tmp_path: pathlib.Path) -> None:
    a = _results(tmp_path / "a.json", "crash_10000", True)
    b = _results(tmp_path / "b.json", "flaky_1000", False)
    out = tmp_path / "all.json"
    assert scenarios.main(["--merge", a, b, "--out", str(out), "--plot", ""]) == 1
    merged = json.loads(out.read_text())
    assert set(merged) == {"crash_10000", "flaky_1000", "_meta"}
    assert merged["_meta"]["failed"] == ["flaky_1000"]


def test_runs_of_different_seeds_are_not_merged(tmp_path: pathlib.Path) -> None:
    a = _results(tmp_path / "a.json", "crash_10000", True, seed=1)
    b = _results(tmp_path / "b.json", "flaky_1000", True, seed=2)
    with pytest.raises(SystemExit, match="different seeds"):
        scenarios.main(["--merge", a, b, "--out", str(tmp_path / "x.json"), "--plot", ""])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"bad\.json: no _meta key"):
        scenarios.main(["--merge", str(tmp_path / "bad.json"), "--plot", ""])
