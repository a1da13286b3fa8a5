"""The scenarios of issue 7 on the Rapid simulator, each returning its measured figures.

Used at small scale by the tests (tests/membership/rapid) and at full scale by
``make sim-membership`` (``python -m membership.rapid.scenarios``), which writes
``bench/results/membership_scale.json`` and a plot of the cluster size over time. On a machine
with cores to spare, run one scenario per process (``python -m membership.rapid.scenarios
crash_10000 --out crash.json --plot ""``) and combine them with ``--merge crash.json ...``.

Every scenario checks the property it is about and records the check in its result
(``ok``), so a figure is never reported for a run that did not do what it claims:

* ``bootstrap``: n members start from one seed within ``spread`` seconds; all agree on one
  view of all n; view changes (batches), simulated time and messages are reported.
* ``crash``: n members in one view; ``fraction`` of them crash at once; every survivor must
  install exactly one new view, the same one, without them.
* ``flaky``: uniform message loss plus members whose every message is lost with a high
  chance; no healthy member may ever be removed.
* ``partition``: a member is cut off while the others change the view; after healing it
  must converge to the current view (by anti-entropy, or removed and rejoined if the cut
  outlasted failure detection).
* ``conflict``: members are made to propose two different cuts; the classic round must
  decide one and everyone must install it.

:func:`one_history` is the safety check all of them share: for every epoch, every member that
installed it installed the same configuration.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections import Counter
from typing import Any

from membership.rapid.config import RapidConfig
from membership.rapid.node import State
from membership.rapid.sim import RapidSim


def one_history(sim: RapidSim) -> bool:
    """Every epoch was installed with one configuration id, by everyone who installed it."""
    ids: dict[int, set[str]] = {}
    for _, _, epoch, config_id, _, _ in sim.installs:
        ids.setdefault(epoch, set()).add(config_id)
    return all(len(v) == 1 for v in ids.values())


def _messages(counts: dict[str, int], members: int, seconds: float | None = None) -> dict:
    total = sum(counts.values())
    out: dict[str, Any] = {
        "total": total,
        "per_member": round(total / max(1, members), 1),
        "by_type": dict(sorted(counts.items())),
    }
    if seconds:
        out["per_member_per_second"] = round(total / max(1, members) / seconds, 2)
    return out


def _timeline(sim: RapidSim, since: float = 0.0, points: int = 400) -> list[list[float]]:
    sim.record_sample()  # where the run ended, which may fall between two samples
    rows = [r for r in sim.timeline if r[0] >= since]
    step = max(1, len(rows) // points)
    thinned = rows[::step]
    if rows and thinned[-1] is not rows[-1]:
        thinned.append(rows[-1])
    return [list(r) for r in thinned]


def _views(sim: RapidSim, since_epoch: int = 0) -> list[dict[str, Any]]:
    views: dict[int, dict[str, Any]] = {}
    for t, _, epoch, config_id, size, via in sim.installs:
        if epoch < since_epoch:
            continue
        v = views.setdefault(
            epoch,
            {
                "epoch": epoch,
                "size": size,
                "config_id": config_id,
                "first": t,
                "last": t,
                "installs": 0,
                "via": Counter(),
            },
        )
        v["first"] = min(v["first"], t)
        v["last"] = max(v["last"], t)
        v["installs"] += 1
        v["via"][via] += 1
    out = []
    for epoch in sorted(views):
        v = views[epoch]
        v["first"], v["last"] = round(v["first"], 3), round(v["last"], 3)
        v["via"] = dict(v["via"])
        out.append(v)
    return out


def _counters(sim: RapidSim) -> dict[str, int]:
    total: Counter[str] = Counter()
    for node in sim.nodes:
        total.update(node.core.counters)
    return {k: v for k, v in sorted(total.items()) if v}


# ---------------------------------------------------------------------- scenarios


def bootstrap(
    n: int = 2000,
    spread: float = 2.0,
    seed: int = 1,
    cfg: RapidConfig | None = None,
    limit: float = 300.0,
) -> dict[str, Any]:
    wall = time.perf_counter()
    sim = RapidSim(cfg or RapidConfig(), seed=seed)
    first = sim.bootstrap()
    for _ in range(n - 1):
        sim.add_joiner([first.name], at=sim.rng.uniform(0.0, spread))
    took = sim.run_while_not(sim.agreed, limit=limit, check_every=0.05)
    views = _views(sim)
    return {
        "ok": sim.agreed() and one_history(sim) and len(sim.members()) == n,
        "members": n,
        "start_spread_s": spread,
        "agreed_at_s": round(took, 3),
        "view_changes": len(views) - 1,
        "views": [{k: v[k] for k in ("epoch", "size", "first", "last")} for v in views],
        "messages": _messages(sim.since(Counter()), n),
        "counters": _counters(sim),
        "wall_s": round(time.perf_counter() - wall, 1),
        "timeline": _timeline(sim),
        "trace": sim.trace_digest(),
    }


def crash(
    n: int = 10_000,
    fraction: float = 0.01,
    seed: int = 1,
    warmup: float = 5.0,
    cfg: RapidConfig | None = None,
    limit: float = 120.0,
) -> dict[str, Any]:
    wall = time.perf_counter()
    sim = RapidSim(cfg or RapidConfig(), seed=seed)
    sim.start_static(n)
    sim.run_for(warmup)
    epoch0 = sim.nodes[0].core.config.epoch  # type: ignore[union-attr]
    victims = [node.name for node in sim.rng.sample(sim.nodes, max(1, round(n * fraction)))]
    survivors = set(sim.names) - set(victims)
    mark = sim.mark()
    crashed_at = sim.now
    alerts_before = _counters(sim).get("alerts", 0)
    sim.crash(victims)
    first_alert: float | None = None

    def done() -> bool:
        nonlocal first_alert
        if (
            first_alert is None
            and sum(x.core.counters["alerts"] for x in sim.live()) > alerts_before
        ):
            first_alert = sim.now
        return sim.agreed(survivors)

    took = sim.run_while_not(done, limit=limit, check_every=0.05)
    sim.run_for(2.0)  # anything after the view change (a second one would show here)
    live = sim.live()
    after = [[v for v in node.views if v[0] > crashed_at] for node in live]
    single = all(len(v) == 1 for v in after) and len({v[0][2] for v in after}) == 1
    views = _views(sim, since_epoch=epoch0 + 1)
    via = views[0]["via"] if views else {}
    counters = _counters(sim)
    return {
        "ok": single and sim.agreed(survivors) and one_history(sim),
        "members": n,
        "crashed": len(victims),
        "every_survivor_installed_one_view": single,
        "detection_s": None if first_alert is None else round(first_alert - crashed_at, 3),
        "first_install_s": round(views[0]["first"] - crashed_at, 3) if views else None,
        "last_install_s": round(views[0]["last"] - crashed_at, 3) if views else None,
        "agreed_within_s": round(took, 2),
        "consensus": {
            "fast_rounds": 1,
            "classic_rounds": counters.get("classic_rounds", 0),
            "decided_by_votes": via.get("fast", 0),
            "decided_by_classic": via.get("classic", 0) + via.get("decided", 0),
            "caught_up_by_anti_entropy": via.get("sync", 0),
        },
        "messages": _messages(sim.since(mark), len(survivors), sim.now - crashed_at),
        "counters": counters,
        "wall_s": round(time.perf_counter() - wall, 1),
        "timeline": _timeline(sim, since=crashed_at - 1.0),
        "trace": sim.trace_digest(),
    }


def flaky(
    n: int = 1000,
    duration: float = 600.0,
    loss: float = 0.02,
    flaky_members: int = 5,
    flaky_loss: float = 0.5,
    seed: int = 1,
    cfg: RapidConfig | None = None,
) -> dict[str, Any]:
    wall = time.perf_counter()
    sim = RapidSim(cfg or RapidConfig(), seed=seed, loss=loss)
    sim.start_static(n)
    bad = [node.name for node in sim.rng.sample(sim.nodes, flaky_members)]
    sim.flaky(bad, flaky_loss)
    healthy = set(sim.names) - set(bad)
    sim.run_for(duration)
    removed = {sim.nodes[i].name for _, i, _ in sim.removals}
    dropped_healthy = set()
    for node in sim.members():
        config = node.core.config
        assert config is not None
        dropped_healthy |= healthy - set(config.nodes)
    views = _views(sim, since_epoch=1)
    return {
        "ok": not (removed & healthy) and not dropped_healthy and one_history(sim),
        "members": n,
        "simulated_s": duration,
        "message_loss": loss,
        "flaky_members": flaky_members,
        "flaky_loss": flaky_loss,
        "healthy_removed": len((removed & healthy) | dropped_healthy),
        "flaky_removed": len(removed & set(bad)),
        "view_changes": len(views),
        "views": [{k: v[k] for k in ("epoch", "size", "first", "last")} for v in views],
        "messages": _messages(sim.since(Counter()), n, duration),
        "counters": _counters(sim),
        "wall_s": round(time.perf_counter() - wall, 1),
        "timeline": _timeline(sim),
        "trace": sim.trace_digest(),
    }


def partition(
    n: int = 1000,
    isolated_for: float = 4.0,
    joiners: int = 10,
    seed: int = 1,
    cfg: RapidConfig | None = None,
) -> dict[str, Any]:
    """One member is cut off while `joiners` join (a view change it misses), then healed."""
    wall = time.perf_counter()
    cfg = cfg or RapidConfig(rejoin_when_removed=True)
    sim = RapidSim(cfg, seed=seed)
    sim.start_static(n)
    sim.run_for(5.0)
    victim = sim.by_name[sim.nodes[sim.rng.randrange(1, n)].name]
    sim.isolate([victim.name])
    for _ in range(joiners):
        sim.add_joiner([sim.nodes[0].name], at=sim.now + 0.1)
    sim.run_for(isolated_for)
    behind = victim.core.config.epoch  # type: ignore[union-attr]
    others = max(e for e, _ in sim.views())
    healed_at = sim.now
    sim.heal()
    took = sim.run_while_not(sim.agreed, limit=120.0, check_every=0.05)
    core = victim.core
    return {
        "ok": sim.agreed() and core.state is State.MEMBER and one_history(sim),
        "members": n + joiners,
        "isolated_s": isolated_for,
        "victim_epoch_while_isolated": behind,
        "cluster_epoch_while_isolated": others,
        "converged_after_heal_s": round(took, 3),
        "victim_path": [via for _, _, _, _, via in victim.views],
        "victim_removed_and_rejoined": core.incarnation > 1,
        "final_epoch": core.config.epoch,  # type: ignore[union-attr]
        "messages": _messages(sim.since(Counter()), n),
        "wall_s": round(time.perf_counter() - wall, 1),
        "timeline": _timeline(sim, since=healed_at - isolated_for - 1.0),
        "trace": sim.trace_digest(),
    }


def conflict(n: int = 1000, seed: int = 1, cfg: RapidConfig | None = None) -> dict[str, Any]:
    """Half the members see a cut {a}, the other half {a, b}, and vote at once: no proposal
    can reach a fast quorum, and the classic round must decide."""
    wall = time.perf_counter()
    sim = RapidSim(cfg or RapidConfig(settle=0.0), seed=seed)
    sim.start_static(n)
    sim.run_for(3.0)
    a, b = sim.nodes[0].core.member, sim.nodes[1].core.member
    full = (1 << sim.cfg.k) - 1
    started = sim.now
    for i, node in enumerate(sim.live()):
        # As if the alerts had reached each half differently: injected straight into each
        # member's cut detector, then a tick lets it vote.
        node.core.detector.add(a, full, sim.now)
        if i % 2:
            node.core.detector.add(b, full, sim.now)
        sim._apply(node, node.core.tick(sim.now))
    took = sim.run_while_not(
        lambda: len(sim.views()) == 1 and max(sim.views())[0] == 1, limit=120.0, check_every=0.05
    )
    sim.run_for(2.0)
    views = _views(sim, since_epoch=1)
    counters = _counters(sim)
    return {
        "ok": one_history(sim) and len(views) == 1 and counters.get("classic_rounds", 0) >= 1,
        "members": n,
        "decided_within_s": round(took, 3),
        "classic_rounds": counters.get("classic_rounds", 0),
        "decided": views[0]["size"] if views else None,
        "via": views[0]["via"] if views else {},
        "messages": _messages(sim.since(Counter()), n),
        "wall_s": round(time.perf_counter() - wall, 1),
        "timeline": _timeline(sim, since=started - 1.0),
        "trace": sim.trace_digest(),
    }


# ---------------------------------------------------------------------- make sim-membership


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    # matplotlib is only needed for the plot, and is heavy to import: keep it out of the sim.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = [k for k in results if isinstance(results[k], dict) and results[k].get("timeline")]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        rows = results[name]["timeline"]
        t = [r[0] for r in rows]
        ax.plot(t, [r[3] for r in rows], label="largest view held", color="tab:blue")
        ax.plot(
            t, [r[2] for r in rows], label="smallest view held", color="tab:orange", linestyle="--"
        )
        ax.plot(
            t,
            [r[4] for r in rows],
            label="members on the most common view",
            color="tab:green",
            linestyle=":",
        )
        ax.set_title(f"{name}: {results[name]['members']} members")
        ax.set_xlabel("simulated seconds")
        ax.set_ylabel("cluster size")
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FULL = {
    "bootstrap_2000": (bootstrap, {"n": 2000, "spread": 2.0}),
    "crash_10000": (crash, {"n": 10_000, "fraction": 0.01}),
    "flaky_1000": (flaky, {"n": 1000, "duration": 600.0}),
    "partition_1000": (partition, {"n": 1000, "isolated_for": 4.0}),
    "partition_removed_1000": (partition, {"n": 1000, "isolated_for": 30.0}),
    "conflict_1000": (conflict, {"n": 1000}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m membership.rapid.scenarios")
    parser.add_argument("--out", default="bench/results/membership_scale.json")
    parser.add_argument("--plot", default="bench/results/membership_scale.png")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="run nothing: combine the results of earlier runs (one scenario each, run in "
        "parallel) into --out and --plot",
    )
    parser.add_argument("only", nargs="*", help=f"scenarios to run (default all: {list(FULL)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only if name not in FULL]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(FULL)}")
    results: dict[str, Any] = {}
    failed = []
    if args.merge:
        return _write(_merge(args.merge), args.out, args.plot)
    for name, (fn, defaults) in FULL.items():
        if args.only and name not in args.only:
            continue
        kwargs = dict(defaults, seed=args.seed)
        kwargs["n"] = max(20, round(kwargs["n"] * args.scale))
        print(f"== {name} {kwargs}", flush=True)
        result = fn(**kwargs)
        results[name] = result
        summary = {k: v for k, v in result.items() if k not in ("timeline", "views", "counters")}
        print(json.dumps(summary, indent=1), flush=True)
        if not result["ok"]:
            failed.append(name)
    results["_meta"] = {"seed": args.seed, "scale": args.scale, "failed": failed}
    return _write(results, args.out, args.plot)


def _merge(paths: list[str]) -> dict[str, Any]:
    """One result set from several runs' JSON files (which must share seed and scale)."""
    results: dict[str, Any] = {}
    metas = []
    for path in paths:
        try:
            loaded = json.loads(pathlib.Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: not a results file ({exc})") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("_meta"), dict):
            raise SystemExit(f"{path}: no _meta key, not written by this tool")
        metas.append(loaded.pop("_meta"))
        results.update(loaded)
    if len({(m.get("seed"), m.get("scale")) for m in metas}) != 1:
        raise SystemExit(f"runs with different seeds or scales cannot be merged: {metas}")
    failed = [name for name, r in results.items() if not r.get("ok")]
    results["_meta"] = {"seed": metas[0]["seed"], "scale": metas[0]["scale"], "failed": failed}
    return results


def _write(results: dict[str, Any], out_path: str, plot_path: str) -> int:
    out = pathlib.Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"-> {out}")
    if plot_path:
        plot(results, pathlib.Path(plot_path))
        print(f"-> {plot_path}")
    failed = results["_meta"]["failed"]
    if failed:
        print(f"FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
