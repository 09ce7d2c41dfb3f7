#!/usr/bin/env python3
"""bench/plot.py: draws the per-lead cost against the dealer count as SVG.

Usage: plot.py RESULTS_CSV OUTPUT_SVG

Reads the CSV bench/run.sh writes (size, measure, value, unit) and plots, on
log-log axes, the cost per lead in microseconds of each measurement at each
dealer count.  Standard library only.
"""

import csv
import math
import sys
from xml.sax.saxutils import escape

# (measure, legend label, colour, dash pattern)
SERIES = [
    ("routed_unsent_insert_us", "routed INSERT, not sent", "#d62728", ""),
    ("routed_insert_us", "routed INSERT + delivery queue", "#d62728", "6,4"),
    ("bare_insert_us", "bare INSERT (triggers off)", "#7f7f7f", ""),
    ("plpgsql_insert_us", "PL/pgSQL baseline INSERT", "#1f77b4", ""),
    ("knn_us", "plain PostGIS KNN query", "#2ca02c", ""),
    ("copy_routing_us", "routing alone, in COPY", "#ff7f0e", ""),
    ("locate10_p50", "locate_dealers() p50", "#9467bd", ""),
    ("locate10_p99", "locate_dealers() p99", "#9467bd", "6,4"),
]

WIDTH, HEIGHT = 900, 520
LEFT, RIGHT, TOP, BOTTOM = 80, 280, 50, 70


def read_results(path):
    """read_results returns {measure: {size: value}} from the CSV."""
    data = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["value"] in ("", None):
                continue
            data.setdefault(row["measure"], {})[int(row["size"])] = float(row["value"])
    return data


def decades(lo, hi):
    """decades returns the powers of ten spanning [lo, hi]."""
    return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def label(v, unit=""):
    """label writes an axis value compactly: 1k, 10k, 100k, 1 ms."""
    if unit == "us":
        if v >= 1000:
            return f"{v / 1000:g} ms"
        return f"{v:g} µs"
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def plot(data, out):
    """plot writes the SVG of the series present in data to out."""
    series = [(m, name, colour, dash) for m, name, colour, dash in SERIES if data.get(m)]
    if not series:
        sys.exit("plot.py: no cost measurements in the results")
    sizes = sorted({s for m, *_ in series for s in data[m]})
    values = [v for m, *_ in series for v in data[m].values() if v > 0]

    x_lo, x_hi = math.log10(min(sizes)), math.log10(max(sizes))
    if x_hi - x_lo < 1:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    y_ticks = decades(min(values), max(values))
    y_lo, y_hi = math.log10(y_ticks[0]), math.log10(y_ticks[-1])
    if y_hi == y_lo:
        y_hi += 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x):
        return LEFT + (math.log10(x) - x_lo) / (x_hi - x_lo) * plot_w

    def py(y):
        return TOP + plot_h - (math.log10(y) - y_lo) / (y_hi - y_lo) * plot_h

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT + plot_w / 2}" y="28" text-anchor="middle" font-size="16">'
        "aimroute: cost per lead against the number of dealers</text>",
    ]
    for y in y_ticks:
        svg.append(f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" stroke="#ccc"/>')
        svg.append(f'<text x="{LEFT - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{escape(label(y, "us"))}</text>')
    # 2 and 5 within each decade, lighter, so that values can be read off.
    for y in (d * k for d in y_ticks[:-1] for k in (2, 5)):
        svg.append(f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" stroke="#eee"/>')
        svg.append(
            f'<text x="{LEFT - 8}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="10" fill="#666">'
            f"{escape(label(y, 'us'))}</text>"
        )
    for x in sizes:
        svg.append(f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>')
        svg.append(f'<text x="{px(x):.1f}" y="{TOP + plot_h + 20}" text-anchor="middle">{escape(label(x))}</text>')
    svg.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    svg.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 22}" text-anchor="middle">'
        "dealers in the network (log scale)</text>"
    )
    svg.append(
        f'<text transform="translate(22 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        "cost per lead (log scale)</text>"
    )

    for i, (measure, name, colour, dash) in enumerate(series):
        points = [(s, v) for s, v in sorted(data[measure].items()) if v > 0]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        path = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in points)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        for s, v in points:
            svg.append(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="3.5" fill="{colour}"/>')
        ly = TOP + 10 + i * 24
        lx = LEFT + plot_w + 20
        svg.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 30}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        svg.append(f'<text x="{lx + 38}" y="{ly + 4}">{escape(name)}</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS_CSV OUTPUT_SVG")
    plot(read_results(sys.argv[1]), sys.argv[2])
