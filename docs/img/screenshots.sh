#!/usr/bin/env bash
# Screenshots of `dvc plots show`'s page (dvc_plots/index.html) in headless Chromium, offline: the README's and
# docs/report.md's pictures. Rerun after `dvc repro` whenever the default competition or the report changes:
#   bash docs/img/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
dvc plots show >/dev/null
page="file://$PWD/dvc_plots/index.html"
shot() {  # shot OUT WIDTH HEIGHT SCALE URL
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --disable-background-networking \
    --force-device-scale-factor="$4" --window-size="$2,$3" --screenshot="$1" "$5" 2>/dev/null
}
# The whole page at half scale: every stage's pictures, as the browser lays them out.
shot docs/img/plots_show.png 1600 "${PAGE_HEIGHT:-11000}" 0.5 "$page"
# The page scrolled to the top-losses grid (the div DVC names after the plot's path), at full scale: readable labels?
shot docs/img/top_losses.png 1600 2150 1 "$page#plots_report_top_losses_png"
ls -l docs/img/*.png
