#!/usr/bin/env python3
"""Draw docs/images/flash-crowd.svg from the simulator's flash-crowd summaries (stdlib only).

  relaycast sim scenarios/flash-crowd.toml --seed 1 --json bench/results/flash_crowd.json
  relaycast sim scenarios/flash-crowd-reactive.toml --seed 1 --json bench/results/flash_crowd_reactive.json
  python3 bench/flash_chart.py

Viewers present and viewers unserved over time, with secondaries (look-ahead), reactive
secondaries, and none; the secondaries serving on a second axis.
"""

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H, L, R, T, B = 760, 300, 55, 55, 20, 40


def load(name):
    with open(os.path.join(REPO, "bench", "results", name)) as f:
        return json.load(f)


def main():
    main_run, reactive = load("flash_crowd.json"), load("flash_crowd_reactive.json")
    series = [
        ("viewers", main_run["with_secondaries"]["timeline"], 1, "#555", ""),
        ("unserved, no secondaries", main_run["without_secondaries"]["timeline"], 2, "#d62728", ""),
        ("unserved, reactive secondaries", reactive["with_secondaries"]["timeline"], 2, "#ff7f0e", ""),
        ("unserved, secondaries with look-ahead", main_run["with_secondaries"]["timeline"], 2, "#2ca02c", ""),
    ]
    tmax = max(row[0] for row in main_run["with_secondaries"]["timeline"])
    ymax = 10000.0
    x = lambda t: L + t / tmax * (W - L - R)  # noqa: E731
    y = lambda v: H - B - v / ymax * (H - B - T)  # noqa: E731
    y2 = lambda v: H - B - v / 8.0 * (H - B - T)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 60}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H + 60}" fill="white"/>']
    for v in range(0, 10001, 2500):
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for s in range(0, 9, 2):
        out.append(f'<text x="{W - R + 5}" y="{y2(s) + 4:.1f}">{s}</text>')
    for t in range(0, int(tmax) + 1, 60):
        out.append(f'<text x="{x(t):.1f}" y="{H - B + 15}" text-anchor="middle">{t}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - B + 30}" text-anchor="middle">simulated time, s</text>')
    out.append(f'<text x="12" y="{T + (H - B - T) / 2}" transform="rotate(-90 12 {T + (H - B - T) / 2})" text-anchor="middle">viewers</text>')
    out.append(f'<text x="{W - 8}" y="{T + (H - B - T) / 2}" transform="rotate(90 {W - 8} {T + (H - B - T) / 2})" text-anchor="middle">secondaries serving (dashed)</text>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#999"/>')
    for label, rows, col, color, _ in series:
        pts = " ".join(f"{x(r[0]):.1f},{y(r[col]):.1f}" for r in rows)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
    pts = " ".join(f"{x(r[0]):.1f},{y2(r[3]):.1f}" for r in main_run["with_secondaries"]["timeline"])
    out.append(f'<polyline fill="none" stroke="#2ca02c" stroke-dasharray="4 3" points="{pts}"/>')
    pts = " ".join(f"{x(r[0]):.1f},{y2(r[3]):.1f}" for r in reactive["with_secondaries"]["timeline"])
    out.append(f'<polyline fill="none" stroke="#ff7f0e" stroke-dasharray="4 3" points="{pts}"/>')
    for i, (label, _, _, color, _) in enumerate(series):
        lx, ly = L + (i % 2) * 340, H + 5 + (i // 2) * 18
        out.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{color}"/><text x="{lx + 18}" y="{ly + 10}">{label}</text>')
    out.append("</svg>")
    path = os.path.join(REPO, "docs", "images", "flash-crowd.svg")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(path)


if __name__ == "__main__":
    main()
