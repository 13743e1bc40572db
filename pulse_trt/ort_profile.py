"""ONNX Runtime's per-node profile of the step graph, summarised (`pulse-trt bench --profile`).

ONNX Runtime writes a Chrome-trace JSON when a session has profiling on (engine.runner_ort:
session_options(profile=PREFIX)): one event per node execution ("cat": "Node", "name":
"<node>_kernel_time", "dur" in microseconds, "args": {"op_name", "provider", ...}) and one per
run ("cat": "Session", "name": "model_run"). The summary: kernel time per step (all node events
/ runs), the share of each op type and the top nodes, so the next bottleneck of a graph is
visible. numpy-free, torch-free: reads the JSON only.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .engine.errors import PulseError


def summarize(path, top: int = 12) -> dict:
    """Summary of one profile file.

    Returns {"runs": number of model runs, "kernel_ms_per_run": node time per run,
    "run_ms_per_run": wall time per run as ORT measured it, "by_op": [{"op", "ms_per_run",
    "share", "nodes"}] (largest first; "nodes" = distinct nodes of that type),
    "top_nodes": [{"node", "op", "ms_per_run", "share"}] (the `top` largest)}. Shares are of
    the kernel time. A file that is not an ONNX Runtime profile is a PulseError."""
    try:
        events = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PulseError(f"cannot read the ONNX Runtime profile {str(path)!r}: {e}") from None
    if not isinstance(events, list):
        raise PulseError(f"{str(path)!r} is not an ONNX Runtime profile (expected a JSON list of events)")
    runs, run_us = 0, 0.0
    op_us: dict = defaultdict(float)
    op_nodes: dict = defaultdict(set)
    node_us: dict = defaultdict(float)
    node_op: dict = {}
    for ev in events:
        if not isinstance(ev, dict):
            continue
        cat, name, dur = ev.get("cat"), str(ev.get("name", "")), float(ev.get("dur", 0) or 0)
        if cat == "Session" and name == "model_run":
            runs += 1
            run_us += dur
        elif cat == "Node" and name.endswith("_kernel_time"):
            op = str((ev.get("args") or {}).get("op_name", "?"))
            node = name[: -len("_kernel_time")]
            op_us[op] += dur
            op_nodes[op].add(node)
            node_us[node] += dur
            node_op[node] = op
    if runs == 0 or not node_us:
        raise PulseError(f"{str(path)!r} holds no model runs with node timings (not a profile of a run?)")
    total = sum(op_us.values())
    by_op = [{"op": op, "ms_per_run": round(us / runs / 1000.0, 3), "share": round(us / total, 4),
              "nodes": len(op_nodes[op])} for op, us in sorted(op_us.items(), key=lambda kv: -kv[1])]
    top_nodes = [{"node": n, "op": node_op[n], "ms_per_run": round(us / runs / 1000.0, 3), "share": round(us / total, 4)}
                 for n, us in sorted(node_us.items(), key=lambda kv: -kv[1])[:top]]
    return {"runs": runs, "kernel_ms_per_run": round(total / runs / 1000.0, 3),
            "run_ms_per_run": round(run_us / runs / 1000.0, 3), "by_op": by_op, "top_nodes": top_nodes}


def to_markdown(summary: dict, title: str, max_ops: int = 10) -> str:
    """A Markdown section: the op-type table (the `max_ops` largest) and the top nodes."""
    lines = [f"### {title}", "",
             f"{summary['runs']} step runs profiled: {summary['kernel_ms_per_run']:.2f} ms of kernels per step "
             f"({summary['run_ms_per_run']:.2f} ms per run as ONNX Runtime timed it, profiling on).", "",
             "| op type | ms/step | share | nodes |", "|---|---:|---:|---:|"]
    for r in summary["by_op"][:max_ops]:
        lines.append(f"| {r['op']} | {r['ms_per_run']:.2f} | {100 * r['share']:.1f}% | {r['nodes']} |")
    rest = summary["by_op"][max_ops:]
    if rest:
        lines.append(f"| {len(rest)} other types | {sum(r['ms_per_run'] for r in rest):.2f} | "
                     f"{100 * sum(r['share'] for r in rest):.1f}% | {sum(r['nodes'] for r in rest)} |")
    lines += ["", "| top nodes | op | ms/step | share |", "|---|---|---:|---:|"]
    for r in summary["top_nodes"]:
        lines.append(f"| `{r['node']}` | {r['op']} | {r['ms_per_run']:.2f} | {100 * r['share']:.1f}% |")
    return "\n".join(lines) + "\n"
