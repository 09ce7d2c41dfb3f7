#!/usr/bin/python3
"""demo/coverage_map.py: draw a brand's coverage (docs/coverage.md).

    coverage_map.py COVERAGE.geojson DEALERS.csv OUT_DIR TITLE

COVERAGE.geojson is what aimroute.coverage_geojson() returns; DEALERS.csv
holds the brand's dealers, one a line: dealer_number, name, active
(t or f), latitude, longitude (no header).  Writes two PNG pictures to
OUT_DIR: coverage_us_ca.png (the US and Canada) and coverage_great_lakes.png
(the Great Lakes, zoomed).  Each postal code's centre point is coloured by
the dealer a lead from there would get; white space (match type Default,
the default dealer) is red, the one colour no dealer area has; the brand's
active dealers are black triangles, inactive ones hollow.

Matplotlib (Debian python3-matplotlib) draws it, with the Agg backend: no
display is needed.
"""
import csv
import io
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from PIL import Image, ImageColor  # noqa: E402  (python3-pil, a dependency of python3-matplotlib)

WHITE_SPACE = "#e8000b"  # red: no dealer area is drawn in it
BACKGROUND = "#f4f4f0"
# Dealer areas: soft colours, none of them red or near it, so that white
# space stands out; neighbouring dealers get different ones (see colour_dealers).
AREA_COLOURS = [
    "#4e79a7", "#59a14f", "#edc948", "#b07aa1", "#76b7b2", "#9c755f",
    "#a0cbe8", "#8cd17d", "#b6992d", "#d4a6c8", "#86bcb6", "#bab0ac",
    "#499894", "#f1ce63", "#79706e",
]
VIEWS = [
    ("coverage_us_ca.png", "US and Canada", (-170.0, -50.0, 17.0, 72.0), 1.2, (12, 7.2)),
    ("coverage_great_lakes.png", "Great Lakes (zoomed)", (-93.5, -74.0, 40.0, 49.5), 5.0, (10, 6.8)),
]


def read_coverage(path):
    """Return the features of the GeoJSON file as (lon, lat, properties)."""
    with open(path, encoding="utf-8") as f:
        collection = json.load(f)
    return [(ft["geometry"]["coordinates"][0], ft["geometry"]["coordinates"][1], ft["properties"])
            for ft in collection["features"]]


def read_dealers(path):
    """Return the dealers of the CSV file as dicts."""
    dealers = []
    with open(path, encoding="utf-8", newline="") as f:
        for number, name, active, lat, lon in csv.reader(f):
            if lat and lon:
                dealers.append({"number": number, "name": name, "active": active == "t",
                                "lat": float(lat), "lon": float(lon)})
    return dealers


def colour_dealers(points, dealers):
    """Give each dealer with an area a colour, different from its neighbours'.

    Two dealers are neighbours when one's postal codes lie among the other's
    nearest ones (a coarse grid of the centre points); a greedy colouring in
    order of area size then picks the first colour no neighbour has.
    """
    cells = {}
    for lon, lat, p in points:
        if p["match_type"] != "Default":
            cells.setdefault((round(lon * 2), round(lat * 2)), set()).add(p["dealer_number"])
    neighbours = {}
    for (x, y), owners in cells.items():
        near = set(owners)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                near |= cells.get((x + dx, y + dy), set())
        for d in owners:
            neighbours.setdefault(d, set()).update(near - {d})
    size = {}
    for _, _, p in points:
        size[p["dealer_number"]] = size.get(p["dealer_number"], 0) + 1
    colour = {}
    for d in sorted(neighbours, key=lambda d: (-size[d], d)):
        taken = {colour[n] for n in neighbours[d] if n in colour}
        free = [c for c in range(len(AREA_COLOURS)) if c not in taken]
        colour[d] = free[0] if free else hash(d) % len(AREA_COLOURS)
    return {d: AREA_COLOURS[c] for d, c in colour.items()}


def draw(points, dealers, colours, view, title, out_path):
    """Draw one view of the coverage to out_path."""
    _, where, (x0, x1, y0, y1), marker, figsize = view
    inside = [(lon, lat, p) for lon, lat, p in points if x0 <= lon <= x1 and y0 <= lat <= y1]
    covered = [(lon, lat, p) for lon, lat, p in inside if p["match_type"] != "Default"]
    white = [(lon, lat, p) for lon, lat, p in inside if p["match_type"] == "Default"]
    fig, ax = plt.subplots(figsize=figsize, dpi=100)
    ax.set_facecolor(BACKGROUND)
    ax.scatter([lon for lon, _, _ in covered], [lat for _, lat, _ in covered],
               c=[colours.get(p["dealer_number"], "#999999") for _, _, p in covered],
               s=marker, linewidths=0, rasterized=True)
    ax.scatter([lon for lon, _, _ in white], [lat for _, lat, _ in white], c=WHITE_SPACE,
               s=marker * 2.5, linewidths=0, rasterized=True)
    shown = [d for d in dealers if x0 <= d["lon"] <= x1 and y0 <= d["lat"] <= y1]
    active = [d for d in shown if d["active"]]
    inactive = [d for d in shown if not d["active"]]
    ax.scatter([d["lon"] for d in active], [d["lat"] for d in active], marker="^",
               s=22 if marker < 3 else 55, c="black", edgecolors="white", linewidths=0.6, zorder=3)
    ax.scatter([d["lon"] for d in inactive], [d["lat"] for d in inactive], marker="^",
               s=22 if marker < 3 else 55, facecolors="none", edgecolors="black", linewidths=0.9,
               zorder=3)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    # Longitude shrunk by the cosine of the middle latitude: shapes look right.
    ax.set_aspect(1.0 / math.cos(math.radians((y0 + y1) / 2)))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    n_white = len(white)
    ax.set_title(f"{title}: {where}\n{len(inside):,} postal codes, {n_white:,} white space "
                 f"({100.0 * n_white / max(len(inside), 1):.1f}%), {len(active)} active dealers shown",
                 fontsize=11)
    ax.legend(handles=[
        Line2D([], [], marker="o", linestyle="", color=WHITE_SPACE, label="white space: default dealer"),
        Line2D([], [], marker="o", linestyle="", color=AREA_COLOURS[0],
               label="postal code, coloured by its dealer"),
        Line2D([], [], marker="^", linestyle="", color="black", label="dealer (active)"),
        Line2D([], [], marker="^", linestyle="", markerfacecolor="none", color="black",
               label="dealer (not active for sales)"),
    ], loc="lower left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    save_small(fig, out_path)
    plt.close(fig)


def save_small(fig, out_path):
    """Save the figure as a PNG of at most 256 colours: a few times smaller.

    The palette holds the map's own colours exactly (white space, the dealer
    areas, black, white, the background), whatever their share of the
    pixels, and adaptive colours for the rest (anti-aliased edges, text):
    an adaptive palette alone drops red when white space is rare.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    with Image.open(buf) as image:
        rgb = image.convert("RGB")
    fixed = [WHITE_SPACE, "#000000", "#ffffff", BACKGROUND] + AREA_COLOURS
    adaptive = rgb.quantize(colors=256 - len(fixed)).getpalette()[:3 * (256 - len(fixed))]
    palette = [v for c in fixed for v in ImageColor.getrgb(c)] + adaptive
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette + [0] * (768 - len(palette)))
    rgb.quantize(palette=holder, dither=0).save(out_path, optimize=True)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    coverage_path, dealers_path, out_dir, title = sys.argv[1:]
    points = read_coverage(coverage_path)
    dealers = read_dealers(dealers_path)
    colours = colour_dealers(points, dealers)
    for view in VIEWS:
        out_path = f"{out_dir}/{view[0]}"
        draw(points, dealers, colours, view, title, out_path)
        print(out_path)


if __name__ == "__main__":
    main()
