"""Replay report: report.json (numbers), report.md (tables a person reads), plans.npz (every
plan, for comparisons) and PNG figures (bird's-eye candidates vs ground truth, error vs horizon,
latency histogram). Figures use matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.core.metrics import PREFIX_HORIZONS_S
from alpamayo_ros.tools.replay import ReplayResult
from alpamayo_ros.tools.scoring import HORIZON_DT_S, TickScore, summarize


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


def build_report(result: ReplayResult) -> tuple[dict[str, Any], list[TickScore]]:
    summary, scores = summarize(result.records, result.gt)
    by_t0 = {s.t0: s for s in scores}
    ticks = []
    for r in result.records:
        s = by_t0.get(r.t0) if r.t0 is not None else None
        ticks.append({
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
            "reasoning": r.reasoning[r.selected] if r.reasoning and r.selected < len(r.reasoning) else "",
        })
    report = {
        "mode": result.mode,
        "bag": str(result.bag),
        "complete": result.error is None,
        "error": result.error,
        "input_errors": result.input_errors,
        "wall_s": result.wall_s,
        "meta": result.meta,
        "summary": summary,
        "ticks": ticks,
    }
    return report, scores


def summary_table(report: dict[str, Any]) -> str:
    """The console/Markdown table of the headline numbers."""
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
    lat = s["latency_s"]
    lines += [
        "",
        f"ticks: {s['ticks_scheduled']} scheduled, {s['ticks_planned']} planned, {s['ticks_scored']} scored; "
        f"minADE_K {_fmt(o['min_ade'])} m, minFDE_K {_fmt(o['min_fde'])} m; "
        f"drops {s['drops']}, gate trips {s['gate_trips']}, fallbacks {s['fallbacks']}",
        f"latency p50 {_fmt(_ms(lat['p50']), ' ms', 1)}, p90 {_fmt(_ms(lat['p90']), ' ms', 1)}, "
        f"p99 {_fmt(_ms(lat['p99']), ' ms', 1)}",
    ]
    return "\n".join(lines)


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def segment_table(report: dict[str, Any]) -> str:
    segs = report["summary"]["segments"]
    if not segs:
        return "_no scored ticks_"
    lines = ["| segment | ticks | minADE_K | minFDE_K | ADE sel. | FDE sel. | minADE_K @1s | @3s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, a in segs.items():
        lines.append(
            f"| {name} | {a['ticks']} | {_fmt(a['min_ade'])} | {_fmt(a['min_fde'])} | {_fmt(a['selected_ade'])} | "
            f"{_fmt(a['selected_fde'])} | {_fmt(a['min_ade_at'].get('1.0'))} | {_fmt(a['min_ade_at'].get('3.0'))} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any], figures: list[Path], out_dir: Path) -> str:
    s, meta = report["summary"], report["meta"]
    t0r = s.get("t0_range")
    parts = [
        f"# Replay report — {Path(report['bag']).name}",
        "",
        f"- mode: **{report['mode']}**" + (" (lockstep)" if meta.get("lockstep") else ""),
        f"- bag: `{report['bag']}`",
        *(f"- {k}: {v}" for k, v in meta.items() if k not in ("lockstep",)),
        f"- evaluated: {s['ticks_planned']} plans"
        + (f", t0 {t0r[0]:.2f} … {t0r[1]:.2f} s (bag clock)" if t0r else ""),
        f"- wall time: {report['wall_s']:.1f} s",
    ]
    if report["error"]:
        parts += ["", f"> **The bag could not be read to its end.** {report['error']}",
                  "> Everything below covers only the part before the damage."]
    parts += ["", "## Accuracy (ego frame at t0, xy, metres)", "", summary_table(report), "",
              "## Per segment", "", segment_table(report), "",
              "## Drops and gates", "",
              f"- status counts: {s['status']}",
              f"- drop reasons: {s['drop_reasons'] or 'none'}",
              f"- ticks without ground truth (future beyond the readable bag): {s['ticks_without_ground_truth']}",
              f"- input messages rejected: {report['input_errors'] or 'none'}"]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{p.stem}]({p.relative_to(out_dir)})" for p in figures]
    parts += ["", "Definitions: docs/replay.md."]
    return "\n".join(parts) + "\n"


def _figures(result: ReplayResult, scores: list[TickScore], out_dir: Path, n_bev: int = 6) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    by_t0 = {r.t0: r for r in result.records if r.xyz is not None}
    start = float(result.meta.get("bag_start_s", 0.0))
    # Bird's-eye view of evenly spaced scored ticks: x forward is up, y left is left.
    if scores:
        pick = [scores[i] for i in np.unique(np.linspace(0, len(scores) - 1, min(n_bev, len(scores))).astype(int))]
        cols = min(3, len(pick))
        rows = math.ceil(len(pick) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 5 * rows), squeeze=False)
        for ax, s in zip(axes.flat, pick, strict=False):
            rec = by_t0[s.t0]
            gt = result.gt.future(s.t0)
            assert rec.xyz is not None  # by_t0 holds planned ticks only
            for k, traj in enumerate(rec.xyz):
                sel = k == rec.selected
                ax.plot(-traj[:, 1], traj[:, 0], color="tab:red" if sel else "tab:blue", lw=2.2 if sel else 0.9,
                        alpha=1.0 if sel else 0.6, label="selected" if sel else ("candidates" if k == 0 or (k == 1 and rec.selected == 0) else None))
            if gt is not None:
                ax.plot(-gt[:, 1], gt[:, 0], "k--", lw=1.6, label="ground truth")
            ax.plot([0], [0], marker=(3, 0, 0), color="k", ms=10)
            ax.set_title(f"t = {s.t0 - start:.1f} s · {s.segment}\nminADE {s.min_ade:.2f} m", fontsize=9)
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
            ax.set_xlabel("-y (left ←) [m]", fontsize=8)
            ax.set_ylabel("x forward [m]", fontsize=8)
        for ax in list(axes.flat)[len(pick):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7, loc="best")
        fig.suptitle("Candidates vs ground truth (ego frame at t0)")
        fig.tight_layout()
        p = fig_dir / "bev_candidates.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
        # Per-waypoint error vs horizon, mean over ticks, for the best and the selected candidate.
        best_err, sel_err = [], []
        for s in scores:
            rec, gt = by_t0[s.t0], result.gt.future(s.t0)
            if gt is None or rec.xyz is None:
                continue
            n = min(rec.xyz.shape[1], gt.shape[0])
            err = np.linalg.norm(rec.xyz[:, :n, :2] - gt[None, :n, :2], axis=-1)
            best_err.append(err[s.best_index])
            sel_err.append(err[rec.selected])
        if best_err:
            n = min(len(e) for e in best_err)
            t = HORIZON_DT_S * np.arange(1, n + 1)
            fig, ax = plt.subplots(figsize=(6.5, 4))
            ax.plot(t, np.mean([e[:n] for e in best_err], axis=0), label="best of K (min ADE)")
            ax.plot(t, np.mean([e[:n] for e in sel_err], axis=0), label="selected")
            for h in PREFIX_HORIZONS_S:
                ax.axvline(h, color="0.8", lw=0.8, zorder=0)
            ax.set_xlabel("horizon [s]")
            ax.set_ylabel("mean L2 error [m]")
            ax.set_title(f"Error vs horizon ({len(best_err)} ticks)")
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            p = fig_dir / "error_vs_horizon.png"
            fig.savefig(p, dpi=90)
            plt.close(fig)
            paths.append(p)
    lat = [r.latency_s * 1e3 for r in result.records if r.latency_s is not None]
    if lat:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.hist(lat, bins=min(40, max(5, len(lat) // 3)), color="tab:green")
        for q, ls in ((50, "-"), (90, "--"), (99, ":")):
            v = float(np.percentile(lat, q))
            ax.axvline(v, color="k", ls=ls, lw=1, label=f"p{q} {v:.1f} ms")
        ax.set_xlabel("latency per tick [ms]")
        ax.set_ylabel("ticks")
        ax.set_title(f"Latency ({result.mode})")
        ax.legend()
        fig.tight_layout()
        p = fig_dir / "latency_hist.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def save_plans(result: ReplayResult, path: Path) -> None:
    planned = [r for r in result.records if r.xyz is not None and r.scores is not None]
    np.savez_compressed(
        path,
        t0=np.array([r.t0 for r in planned], dtype=np.float64),
        tick_time=np.array([r.tick_time for r in planned], dtype=np.float64),
        xyz=np.stack([np.asarray(r.xyz) for r in planned]) if planned else np.zeros((0, 0, 0, 3), np.float32),
        scores=np.stack([np.asarray(r.scores) for r in planned]) if planned else np.zeros((0, 0)),
        selected=np.array([r.selected for r in planned], dtype=np.int64),
    )


def write_report(result: ReplayResult, out_dir: str | Path, figures: bool = True) -> tuple[ReportPaths, dict[str, Any]]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report, scores = build_report(result)
    figs = _figures(result, scores, out) if figures else []
    json_path, md_path, plans_path = out / "report.json", out / "report.md", out / "plans.npz"
    json_path.write_text(json.dumps(_finite(report), indent=1, default=_json_default, allow_nan=False) + "\n")
    md_path.write_text(markdown(report, figs, out))
    save_plans(result, plans_path)
    return ReportPaths(out, json_path, md_path, plans_path, figs), report
