"""Replay report: report.json (numbers), report.md (tables a person reads), plans.npz (every
plan, for comparisons) and PNG figures (bird's-eye candidates vs ground truth, error vs horizon,
latency histogram). Figures use matplotlib's Agg backend (no display needed).

A report covers one bag or several (each bag's ticks scored against its own odometry, then the
means taken over all ticks). Every report carries the baselines (constant velocity, constant turn
rate: core.baselines) scored on the same ticks; a protocol replay adds the reference protocol's
metric (tools/protocol.py) above the package's own numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.core.baselines import BASELINES
from alpamayo_ros.core.metrics import PREFIX_HORIZONS_S
from alpamayo_ros.tools.protocol import Protocol, ProtocolSample, protocol_samples, protocol_summary
from alpamayo_ros.tools.replay import ReplayResult
from alpamayo_ros.tools.scoring import HORIZON_DT_S, TickRecord, TickScore, spread, summary_of

BASELINE_LABELS = {"constant_velocity": "constant velocity", "constant_turn_rate": "constant turn rate"}
_MAX_MD_ROWS = 50


@dataclass
class ReportPaths:
    out_dir: Path
    json: Path
    markdown: Path
    plans: Path
    figures: list[Path]


def _fmt(v: Any, unit: str = "", digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _finite(o: Any) -> Any:
    """NaN/inf -> None so report.json stays strict JSON."""
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


def _runs(results: ReplayResult | Sequence[ReplayResult]) -> list[ReplayResult]:
    return [results] if isinstance(results, ReplayResult) else list(results)


def bag_name(result: ReplayResult) -> str:
    return result.bag.name


def _tick_row(bag: str, r: TickRecord, s: TickScore | None) -> dict[str, Any]:
    return {
        "bag": bag,
        "tick_time": r.tick_time,
        "t0": r.t0,
        "status": r.status,
        "reason": r.reason,
        "gate_ok": r.gate_ok,
        "fallback": r.fallback,
        "selected": r.selected,
        "latency_s": r.latency_s,
        "segment": s.segment if s else None,
        "min_ade": s.min_ade if s else None,
        "min_fde": s.min_fde if s else None,
        "selected_ade": s.selected_ade if s else None,
        "selected_fde": s.selected_fde if s else None,
        "baselines": {k: {"ade": m.min_ade, "fde": m.min_fde} for k, m in s.baselines.items()} if s else {},
        "reasoning": r.reasoning[r.selected] if r.reasoning and r.selected < len(r.reasoning) else "",
        "route_instruction": r.route_instruction,
    }


def _protocol_samples(run: ReplayResult, scores: list[TickScore], protocol: Protocol) -> list[ProtocolSample]:
    """One sample per protocol clip time of the run; ticks the run never reached are failures."""
    offsets = list(run.meta.get("protocol_t0_offsets_s") or sorted(protocol.t0_offsets_s))
    samples = protocol_samples(bag_name(run), run.records, scores, offsets)
    for off in offsets[len(samples):]:
        samples.append(ProtocolSample(bag_name(run), off, "error", reason=run.error or "not replayed"))
    return samples


def build_report(results: ReplayResult | Sequence[ReplayResult], protocol: Protocol | None = None,
                 deviations: Sequence[str] = (), settings: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], list[TickScore]]:
    """The report of one or several bags' replays (plus the protocol section when given).

    Every number is a plain mean or count over ticks, so the report of N bags is the report of
    their concatenated ticks; several bags add one row per bag (each the single-bag report's
    numbers) and the spread of those rows across bags. `settings`: what produced the results
    (tools/evaluate.py run_settings), reported as they are."""
    runs = _runs(results)
    records: list[TickRecord] = []
    scores: list[TickScore] = []
    ticks: list[dict[str, Any]] = []
    samples: list[ProtocolSample] = []
    for run in runs:
        run_scores = run.scored()
        by_t0 = {s.t0: s for s in run_scores}
        ticks += [_tick_row(bag_name(run), r, by_t0.get(r.t0) if r.xyz is not None else None) for r in run.records]
        records += run.records
        scores += run_scores
        if protocol is not None:
            samples += _protocol_samples(run, run_scores, protocol)
    errors = [f"{bag_name(r)}: {r.error}" if len(runs) > 1 else r.error for r in runs if r.error]
    first = runs[0]
    report: dict[str, Any] = {
        "mode": first.mode,
        "bag": str(first.bag) if len(runs) == 1 else f"{len(runs)} bags",
        "bags": [str(r.bag) for r in runs],
        "complete": not errors,
        "error": "; ".join(e for e in errors if e) or None,
        "input_errors": _merge_counts(r.input_errors for r in runs),
        "wall_s": sum(r.wall_s for r in runs),
        "meta": first.meta,
        "summary": summary_of(records, scores),
        "ticks": ticks,
    }
    if settings is not None:
        report["settings"] = settings
    if len(runs) > 1:
        report["runs"] = [bag_row(r) for r in runs]
        report["summary"]["across_bags"] = across_bags(report["runs"])
    if protocol is not None:
        policy = str(first.meta.get("t0_policy", "node"))
        report["protocol"] = protocol_summary(protocol, samples, deviations, policy)
    return report, scores


def bag_row(run: ReplayResult) -> dict[str, Any]:
    """One bag's line of a multi-bag report: the numbers its own single-bag report has."""
    s = summary_of(run.records, run.scored())
    o = s["overall"]
    return {
        "bag": str(run.bag), "name": bag_name(run), "status": run.status, "complete": run.error is None,
        "error": run.error, "ticks": len(run.records), "ticks_planned": s["ticks_planned"],
        "ticks_scored": s["ticks_scored"], "drops": s["drops"], "gate_trips": s["gate_trips"],
        "min_ade": o["min_ade"], "min_fde": o["min_fde"], "selected_ade": o["selected_ade"],
        "selected_fde": o["selected_fde"], "baselines": {n: b["ade"] for n, b in o["baselines"].items()},
        "latency_p50_s": s["latency_s"]["p50"], "wall_s": run.wall_s, "meta": run.meta,
    }


SPREAD_METRICS = ("min_ade", "min_fde", "selected_ade", "selected_fde")


def across_bags(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How each bag's mean varies across the bags that were scored (scoring.spread)."""
    out = {m: spread({r["name"]: r[m] for r in rows}) for m in SPREAD_METRICS}
    for name in BASELINES:
        out[f"ade_{name}"] = spread({r["name"]: r["baselines"].get(name) for r in rows})
    return out


def _merge_counts(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def summary_table(report: dict[str, Any]) -> str:
    """The console/Markdown table of the headline numbers, baselines included."""
    s = report["summary"]
    o = s["overall"]
    hs = [f"{h:.1f}" for h in PREFIX_HORIZONS_S]
    lines = [
        "| metric [m] | " + " | ".join(f"@{h}s" for h in hs) + " |",
        "|---|" + "---:|" * len(hs),
        "| minADE_K (best by full ADE) | " + " | ".join(_fmt(o["min_ade_at"].get(h)) for h in hs) + " |",
        "| ADE, selected | " + " | ".join(_fmt(o["selected_ade_at"].get(h)) for h in hs) + " |",
        "| FDE, selected | " + " | ".join(_fmt(o["selected_fde_at"].get(h)) for h in hs) + " |",
    ]
    base = o.get("baselines", {})
    for name, b in base.items():
        lines.append(f"| ADE, {BASELINE_LABELS.get(name, name)} (K=1) | "
                     + " | ".join(_fmt(b["ade_at"].get(h)) for h in hs) + " |")
    lat = s["latency_s"]
    lines += [
        "",
        f"ticks: {s['ticks_scheduled']} scheduled, {s['ticks_planned']} planned, {s['ticks_scored']} scored; "
        f"minADE_K {_fmt(o['min_ade'])} m, minFDE_K {_fmt(o['min_fde'])} m; "
        f"drops {s['drops']}, gate trips {s['gate_trips']}, fallbacks {s['fallbacks']}",
    ]
    if base:
        lines.append("baselines on the same ticks (ADE / FDE, 6.4 s): " + "; ".join(
            f"{BASELINE_LABELS.get(n, n)} {_fmt(b['ade'])} / {_fmt(b['fde'])} m" for n, b in base.items())
            + f" — model: minADE_K {_fmt(o['min_ade'])}, selected ADE {_fmt(o['selected_ade'])} m")
    lines.append(f"latency p50 {_fmt(_ms(lat['p50']), ' ms', 1)}, p90 {_fmt(_ms(lat['p90']), ' ms', 1)}, "
                 f"p99 {_fmt(_ms(lat['p99']), ' ms', 1)}")
    return "\n".join(lines)


def protocol_table(report: dict[str, Any]) -> str:
    """The reference protocol's number next to the baselines, then its settings and failures."""
    p = report.get("protocol")
    if not p:
        return ""
    d = p["protocol"]
    lines = [
        f"**{p['metric']} (reference protocol) = {_fmt(p['value'])} m** over {p['samples_scored']}/{p['samples_total']} "
        f"clip samples" + ("" if p["faithful"] else " — NOT the reference settings: " + "; ".join(p["deviations"])),
        "",
        f"| plan | {p['metric']} [m] |",
        "|---|---:|",
        f"| model (K={d['K']}, min over samples) | {_fmt(p['value'])} |",
    ]
    lines += [f"| {BASELINE_LABELS.get(n, n)} (K=1) | {_fmt(v)} |" for n, v in p["baselines"].items()]
    lines += [
        "",
        f"Protocol ({d['source']}): t0 = {', '.join(f'{t:g}' for t in d['t0_offsets_s'])} s of clip time "
        f"(t0 policy: {d['t0_policy']}), K = {d['K']}, temperature {d['temperature']}, top-p {d['top_p']}, "
        f"seed {d['seed']} set before every clip, at most {d['max_generation_length']} reasoning tokens, gates "
        f"{d['gates']}. {p['metric']}: {d['definition']}.",
    ]
    if p["failed"]:
        lines += ["", f"Failed samples ({len(p['failed'])}, left out of the mean as the recipe does):"]
        lines += [f"- {f['bag']} @ {f['t0_offset_s']} s: {f['status']} {f['reason']}".rstrip()
                  for f in p["failed"][:_MAX_MD_ROWS]]
    return "\n".join(lines)


def protocol_clip_table(report: dict[str, Any]) -> str:
    p = report.get("protocol")
    if not p or not p["samples"]:
        return ""
    names = list(p["baselines"])
    lines = ["| clip (bag) | t0 [s] | " + p["metric"] + " [m] | " + " | ".join(BASELINE_LABELS.get(n, n) for n in names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for smp in p["samples"][:_MAX_MD_ROWS]:
        lines.append(f"| {smp['bag']} | {_fmt(smp['t0_offset_s'], digits=2)} | {_fmt(smp['min_ade'])} | "
                     + " | ".join(_fmt(smp["baselines"].get(n)) for n in names) + " |")
    if len(p["samples"]) > _MAX_MD_ROWS:
        lines.append(f"\n… {len(p['samples']) - _MAX_MD_ROWS} more in report.json")
    return "\n".join(lines)


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def segment_table(report: dict[str, Any]) -> str:
    segs = report["summary"]["segments"]
    if not segs:
        return "_no scored ticks_"
    names = list(BASELINES)
    lines = ["| segment | ticks | minADE_K | minFDE_K | ADE sel. | FDE sel. | minADE_K @1s | @3s | "
             + " | ".join(f"ADE {BASELINE_LABELS.get(n, n)}" for n in names) + " |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(names)]
    for name, a in segs.items():
        lines.append(
            f"| {name} | {a['ticks']} | {_fmt(a['min_ade'])} | {_fmt(a['min_fde'])} | {_fmt(a['selected_ade'])} | "
            f"{_fmt(a['selected_fde'])} | {_fmt(a['min_ade_at'].get('1.0'))} | {_fmt(a['min_ade_at'].get('3.0'))} | "
            + " | ".join(_fmt(a["baselines"].get(n, {}).get("ade")) for n in names) + " |"
        )
    return "\n".join(lines)


def bag_table(report: dict[str, Any]) -> str:
    """One row per bag (multi-bag reports), failed bags included, in the order given."""
    rows = report.get("runs") or []
    if not rows:
        return ""
    names = list(BASELINES)
    lines = ["| bag | status | ticks | scored | minADE_K | minFDE_K | ADE sel. | "
             + " | ".join(f"ADE {BASELINE_LABELS.get(n, n)}" for n in names) + " | drops |",
             "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(names) + "---:|"]
    for r in rows[:_MAX_MD_ROWS]:
        lines.append(f"| {r['name']} | {r['status']} | {r['ticks']} | {r['ticks_scored']} | {_fmt(r['min_ade'])} | "
                     f"{_fmt(r['min_fde'])} | {_fmt(r['selected_ade'])} | "
                     + " | ".join(_fmt(r["baselines"].get(n)) for n in names) + f" | {r['drops']} |")
    if len(rows) > _MAX_MD_ROWS:
        lines.append(f"\n… {len(rows) - _MAX_MD_ROWS} more in report.json `runs`")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", f"Bags that failed or were cut short ({len(failed)}):"]
        lines += [f"- {r['name']} ({r['status']}): {r['error']}" for r in failed[:_MAX_MD_ROWS]]
    return "\n".join(lines)


def spread_table(report: dict[str, Any]) -> str:
    """Each bag's mean, across the bags: unweighted mean, std, quantiles, best and worst bag."""
    spread_rows = report["summary"].get("across_bags")
    if not spread_rows:
        return ""
    labels = {"min_ade": "minADE_K", "min_fde": "minFDE_K", "selected_ade": "ADE, selected",
              "selected_fde": "FDE, selected"}
    labels |= {f"ade_{n}": f"ADE, {BASELINE_LABELS.get(n, n)}" for n in BASELINES}
    lines = ["| per-bag mean [m] | bags | mean | std | min | p10 | median | p90 | max | worst bag |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key, sp in spread_rows.items():
        if sp["bags"]:
            lines.append(f"| {labels.get(key, key)} | {sp['bags']} | {_fmt(sp['mean'])} | {_fmt(sp['std'])} | "
                         f"{_fmt(sp['min'])} | {_fmt(sp['p10'])} | {_fmt(sp['median'])} | {_fmt(sp['p90'])} | "
                         f"{_fmt(sp['max'])} | {sp['worst']} |")
    return "\n".join(lines)


def settings_list(report: dict[str, Any]) -> list[str]:
    settings = report.get("settings")
    if not settings:
        return []
    return [f"- {k}: {v}" for k, v in settings.items() if not isinstance(v, dict | list) or len(str(v)) < 200]


def markdown(report: dict[str, Any], figures: list[Path], out_dir: Path) -> str:
    s, meta = report["summary"], report["meta"]
    t0r = s.get("t0_range")
    many = len(report.get("bags", [])) > 1
    parts = [
        f"# Replay report — {report['bag'] if many else Path(report['bag']).name}",
        "",
        f"- mode: **{report['mode']}**" + (" (lockstep)" if meta.get("lockstep") else ""),
        f"- bag: `{report['bag']}`" if not many else f"- bags: {len(report['bags'])} (per-bag details in report.json `runs`)",
        *(f"- {k}: {v}" for k, v in meta.items() if k not in ("lockstep", "worker")),
        f"- evaluated: {s['ticks_planned']} plans"
        + (f", t0 {t0r[0]:.2f} … {t0r[1]:.2f} s (bag clock)" if t0r else ""),
        f"- wall time: {report['wall_s']:.1f} s",
    ]
    if report["error"] and not many:
        parts += ["", f"> **The bag could not be read to its end.** {report['error']}",
                  "> Everything below covers only the part before the damage."]
    elif report["error"]:
        bad = [r for r in report.get("runs", []) if r["status"] != "ok"]
        parts += ["", f"> **{len(bad)} of {len(report['bags'])} bags failed or could not be read to their end** "
                      "(listed under Per bag); everything below covers what was evaluated."]
    if report.get("settings"):
        parts += ["", "## Settings", "", *settings_list(report)]
    if report.get("protocol"):
        parts += ["", "## Reference protocol", "", protocol_table(report), "", protocol_clip_table(report)]
    parts += ["", "## Accuracy (ego frame at t0, xy, metres)", "", summary_table(report), ""]
    if report.get("runs"):
        parts += ["## Per bag", "", bag_table(report), "", "## Spread across bags", "", spread_table(report), ""]
    parts += ["## Per segment", "", segment_table(report), "",
              "## Drops and gates", "",
              f"- status counts: {s['status']}",
              f"- drop reasons: {s['drop_reasons'] or 'none'}",
              f"- ticks without ground truth (future beyond the readable bag): {s['ticks_without_ground_truth']}",
              f"- input messages rejected: {report['input_errors'] or 'none'}"]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{p.stem}]({p.relative_to(out_dir)})" for p in figures]
    parts += ["", "Baselines: constant velocity and constant turn rate from the same 16-pose ego history "
              "(core/baselines.py), scored on the same ticks as the model. Definitions: docs/replay.md."]
    return "\n".join(parts) + "\n"


_BASELINE_STYLE = {"constant_velocity": ("0.45", ":"), "constant_turn_rate": ("tab:green", "-.")}


def _figures(runs: list[ReplayResult], scores: list[TickScore], out_dir: Path, n_bev: int = 6) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    run_of = {bag_name(r): r for r in runs}
    planned = {(bag_name(r), rec.t0): rec for r in runs for rec in r.records if rec.xyz is not None}
    if scores:
        paths.append(_bev_figure(plt, scores, planned, run_of, fig_dir, n_bev, many=len(runs) > 1))
        p = _error_figure(plt, scores, planned, fig_dir)
        if p is not None:
            paths.append(p)
    lat = [rec.latency_s * 1e3 for r in runs for rec in r.records if rec.latency_s is not None]
    if lat:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.hist(lat, bins=min(40, max(5, len(lat) // 3)), color="tab:green")
        for q, ls in ((50, "-"), (90, "--"), (99, ":")):
            v = float(np.percentile(lat, q))
            ax.axvline(v, color="k", ls=ls, lw=1, label=f"p{q} {v:.1f} ms")
        ax.set_xlabel("latency per tick [ms]")
        ax.set_ylabel("ticks")
        ax.set_title(f"Latency ({runs[0].mode})")
        ax.legend()
        fig.tight_layout()
        p = fig_dir / "latency_hist.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def _bev_figure(plt: Any, scores: list[TickScore], planned: dict, run_of: dict, fig_dir: Path, n_bev: int,
                many: bool) -> Path:
    """Bird's-eye view of evenly spaced scored ticks (x forward up, y left to the left):
    candidates, the selected one, the baselines and the ground truth."""
    pick = [scores[i] for i in np.unique(np.linspace(0, len(scores) - 1, min(n_bev, len(scores))).astype(int))]
    cols = min(3, len(pick))
    rows = math.ceil(len(pick) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 5 * rows), squeeze=False)
    for ax, s in zip(axes.flat, pick, strict=False):
        rec, run = planned[(s.bag, s.t0)], run_of[s.bag]
        assert rec.xyz is not None  # planned holds planned ticks only
        for k, traj in enumerate(rec.xyz):
            sel = k == rec.selected
            ax.plot(-traj[:, 1], traj[:, 0], color="tab:red" if sel else "tab:blue", lw=2.2 if sel else 0.9,
                    alpha=1.0 if sel else 0.6,
                    label="selected" if sel else ("candidates" if k == 0 or (k == 1 and rec.selected == 0) else None))
        for name, traj in s.baseline_xyz.items():
            color, ls = _BASELINE_STYLE.get(name, ("0.3", "--"))
            ax.plot(-traj[:, 1], traj[:, 0], color=color, ls=ls, lw=1.3, label=BASELINE_LABELS.get(name, name))
        gt = s.ground_truth
        if gt is not None:
            ax.plot(-gt[:, 1], gt[:, 0], "k--", lw=1.6, label="ground truth")
        ax.plot([0], [0], marker=(3, 0, 0), color="k", ms=10)
        start = float(run.meta.get("bag_start_s", 0.0))
        where = f"{s.bag} · " if many else ""
        ax.set_title(f"{where}t = {s.t0 - start:.1f} s · {s.segment}\nminADE {s.min_ade:.2f} m", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.set_xlabel("-y (left ←) [m]", fontsize=8)
        ax.set_ylabel("x forward [m]", fontsize=8)
    for ax in list(axes.flat)[len(pick):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle("Candidates, baselines and ground truth (ego frame at t0)")
    fig.tight_layout()
    p = fig_dir / "bev_candidates.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


def _error_figure(plt: Any, scores: list[TickScore], planned: dict, fig_dir: Path) -> Path | None:
    """Mean L2 error per waypoint over the ticks: best of K, selected, and each baseline."""
    curves: dict[str, list[np.ndarray]] = {"best of K (min ADE)": [], "selected": []}
    curves |= {f"{BASELINE_LABELS.get(n, n)} (K=1)": [] for n in BASELINES}
    for s in scores:
        rec, gt = planned[(s.bag, s.t0)], s.ground_truth
        if gt is None or rec.xyz is None:
            continue
        n = min(rec.xyz.shape[1], gt.shape[0])
        err = np.linalg.norm(rec.xyz[:, :n, :2] - gt[None, :n, :2], axis=-1)
        curves["best of K (min ADE)"].append(err[s.best_index])
        curves["selected"].append(err[rec.selected])
        for name, traj in s.baseline_xyz.items():
            curves[f"{BASELINE_LABELS.get(name, name)} (K=1)"].append(np.linalg.norm(traj[:, :2] - gt[:n, :2], axis=-1))
    if not curves["selected"]:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = [("tab:blue", "-"), ("tab:red", "-")] + [_BASELINE_STYLE.get(n, ("0.3", "--")) for n in BASELINES]
    for (label, errs), (color, ls) in zip(curves.items(), styles, strict=True):
        if errs:
            n = min(len(e) for e in errs)
            t = HORIZON_DT_S * np.arange(1, n + 1)
            ax.plot(t, np.mean([e[:n] for e in errs], axis=0), color=color, ls=ls, label=label)
    for h in PREFIX_HORIZONS_S:
        ax.axvline(h, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("horizon [s]")
    ax.set_ylabel("mean L2 error [m]")
    ax.set_title(f"Error vs horizon ({len(curves['selected'])} ticks)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    p = fig_dir / "error_vs_horizon.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


def save_plans(runs: list[ReplayResult], path: Path) -> None:
    planned = [(bag_name(r), rec) for r in runs for rec in r.records if rec.xyz is not None and rec.scores is not None]
    shapes = {np.shape(rec.xyz) for _, rec in planned}
    same = len(shapes) <= 1
    np.savez_compressed(
        path,
        bag=np.array([b for b, _ in planned], dtype=str),
        t0=np.array([r.t0 for _, r in planned], dtype=np.float64),
        tick_time=np.array([r.tick_time for _, r in planned], dtype=np.float64),
        xyz=np.stack([np.asarray(r.xyz) for _, r in planned]) if planned and same else np.zeros((0, 0, 0, 3), np.float32),
        scores=np.stack([np.asarray(r.scores) for _, r in planned]) if planned and same else np.zeros((0, 0)),
        selected=np.array([r.selected for _, r in planned], dtype=np.int64),
    )


def write_report(results: ReplayResult | Sequence[ReplayResult], out_dir: str | Path, figures: bool = True,
                 protocol: Protocol | None = None, deviations: Sequence[str] = (),
                 settings: dict[str, Any] | None = None) -> tuple[ReportPaths, dict[str, Any]]:
    """report.json, report.md, plans.npz and figures of one or several bags' replays."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = _runs(results)
    report, scores = build_report(runs, protocol, deviations, settings)
    figs = _figures(runs, scores, out) if figures else []
    json_path, md_path, plans_path = out / "report.json", out / "report.md", out / "plans.npz"
    json_path.write_text(json.dumps(_finite(report), indent=1, default=_json_default, allow_nan=False) + "\n")
    md_path.write_text(markdown(report, figs, out))
    save_plans(runs, plans_path)
    return ReportPaths(out, json_path, md_path, plans_path, figs), report
