#!/usr/bin/env bash
# Screenshots of `dvc plots show`'s page (dvc_plots/index.html) in headless Chromium, offline: the pictures of
# docs/report.md. Rerun after `dvc repro` whenever the default competition or the report changes:
#   bash docs/img/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
dvc plots show >/dev/null
shot() {  # shot OUT WIDTH HEIGHT SCALE URL
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --disable-background-networking \
    --force-device-scale-factor="$4" --window-size="$2,$3" --screenshot="$1" "$5" 2>/dev/null
}
# The whole page at half size: every stage's pictures as the browser lays them out (each top loss on its own, after
# the grid, makes it long). The window is taller than the page; the blank below it is cut off.
shot docs/img/plots_show.png 1600 "${PAGE_HEIGHT:-26000}" 0.5 "file://$PWD/dvc_plots/index.html"
python - <<'PY'
import numpy as np
from PIL import Image
im = Image.open("docs/img/plots_show.png").convert("RGB")
rows = np.where((np.asarray(im.convert("L")) < 250).any(1))[0]
im.crop((0, 0, im.width, int(rows.max()) + 10)).save("docs/img/plots_show.png", optimize=True)
PY
# The same page scrolled to the top-losses grid (the div DVC names after the plot's path), at full size: are the
# labels readable? Headless Chromium does not scroll a page it screenshots to its #fragment; a frame does.
cat > dvc_plots/top_losses.html <<'HTML'
<body style="margin:0"><iframe src="index.html#plots_report_top_losses_png" width="1600" height="2150"
style="border:0"></iframe></body>
HTML
shot docs/img/top_losses.png 1600 2150 1 "file://$PWD/dvc_plots/top_losses.html"
ls -l docs/img/*.png
