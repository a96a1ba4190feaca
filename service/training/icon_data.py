"""A small real image + short-text set built from an installed icon theme.

Each example is one icon of the freedesktop theme (Adwaita by default, in
``/usr/share/icons``): the image is the icon's PNG, the text is its file name with the
dashes as spaces (``media playback start symbolic``: short, compound, made of words a
vocabulary often lacks), and the label is the theme's context folder (actions, devices,
emblems, emotes, mimetypes, places, status, ...). Contexts with fewer than
``min_per_class`` icons and the context-free ``legacy`` folder are left out.

Renditions of one icon (full colour and symbolic, right-to-left variants) share a name
stem; the split is drawn per stem, so no icon is both trained on and tested on. Nothing is
downloaded: the set is as large as the theme installed on the machine.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
from collections import Counter
from pathlib import Path

DEFAULT_THEME = Path("/usr/share/icons/Adwaita/48x48")
_SKIP = frozenset({"legacy", "apps"})


def _stem(name: str) -> str:
    base = name.split(".", 1)[0]
    for tag in ("-symbolic", "-rtl"):
        base = base.replace(tag, "")
    return base


def _split(stem: str, val: float, test: float) -> str:
    """Train / val / test from a hash of the stem: stable across runs and machines."""
    u = int(hashlib.sha256(stem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "val" if u < test + val else "train"


def generate(
    out: Path,
    theme: Path = DEFAULT_THEME,
    min_per_class: int = 15,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Path:
    """Copy the theme's PNG icons into ``out/images`` and write ``out/manifest.csv``."""
    files = sorted(p for p in theme.glob("*/*.png") if p.parent.name not in _SKIP and p.is_file())
    if not files:
        raise FileNotFoundError(f"no PNG icons under {theme}/<context>/")
    counts = Counter(p.parent.name for p in files)
    keep = [p for p in files if counts[p.parent.name] >= min_per_class]
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in keep:
        rel = f"images/{p.parent.name}-{p.name}"
        shutil.copyfile(p, out / rel)
        text = p.name.split(".", 1)[0].replace("-", " ").replace("_", " ")
        rows.append((rel, text, p.parent.name, _split(_stem(p.name), val_fraction, test_fraction)))
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "text", "label", "split"])
        writer.writerows(rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the icon theme image+text set.")
    parser.add_argument("--out", type=Path, default=Path("data/icons"))
    parser.add_argument("--theme", type=Path, default=DEFAULT_THEME)
    args = parser.parse_args(argv)
    print(generate(args.out, args.theme))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
