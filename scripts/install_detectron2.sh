#!/usr/bin/env bash
# Builds Detectron2 (the optional second training engine) into .venv against the installed torch.
# Called by `scripts/install.sh --with-detectron2`; needs .venv with torch already installed
# (DETECTRON2_PYTHON names another interpreter, e.g. the Docker image's).
# Detectron2 publishes no wheel, so it is compiled from source (C++ CPU ops: 3-6 minutes on 2 cores;
# MAX_JOBS bounds the parallel compile). Source: ../shared/vendor/detectron2-<commit>.tar.gz when present
# (VENDOR_DIR overrides the folder), else the same commit from the upstream repository; with neither, one line
# says where to put the tarball. Re-running is cheap: the build is skipped while the commit and the torch
# version are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

D2_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833
D2_UPSTREAM="git+https://github.com/facebookresearch/detectron2@${D2_COMMIT}"
VENDOR_DIR=${VENDOR_DIR:-../shared/vendor}
tarball="$VENDOR_DIR/detectron2-${D2_COMMIT:0:7}.tar.gz"
PY=${DETECTRON2_PYTHON:-$PWD/.venv/bin/python}
prefix=$("$PY" -c "import sys; print(sys.prefix)")

stamp=$prefix/.lsmt-detectron2
torch_version=$("$PY" -c "import torch; print(torch.__version__)")
want="$D2_COMMIT torch=$torch_version"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$PY" -c "import detectron2._C" 2>/dev/null; then
  exit 0
fi

log=$prefix/install-detectron2.log
: >"$log"
# pip's "... is ignored: it is neither a file nor a directory" warnings are noise: the real error is below them
fail() {
  grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40 >&2
  echo "Detectron2 build failed ($1); full log: $log" >&2
  exit 1
}

# The source first: without it nothing else is worth installing.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -f "$tarball" ]; then
  echo "==> building Detectron2 ${D2_COMMIT:0:7} from $tarball (a few minutes)"
  tar -xzf "$tarball" -C "$work"
else
  echo "==> $tarball not found: fetching Detectron2 ${D2_COMMIT:0:7} from $D2_UPSTREAM"
  if ! { git clone -q https://github.com/facebookresearch/detectron2 "$work/src" &&
         git -C "$work/src" checkout -q "$D2_COMMIT"; } >>"$log" 2>&1; then
    echo "Detectron2 source not found: no $(realpath -m "$tarball") (VENDOR_DIR=$VENDOR_DIR) and fetching $D2_UPSTREAM failed (offline?); put detectron2-${D2_COMMIT:0:7}.tar.gz there or point VENDOR_DIR at its folder (git log: $log)" >&2
    exit 1
  fi
fi

echo "==> installing Detectron2's runtime dependencies (pyproject extra 'detectron2')"
mapfile -t deps < <("$PY" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["detectron2"]))
PY
)
# wheel: the build below runs in this environment (no isolation), and an older setuptools needs it
"$PY" -m pip install -q wheel "${deps[@]}" >>"$log" 2>&1 || fail "runtime dependencies"

src=$(dirname "$(find "$work" -maxdepth 2 -name setup.py | head -1)")
# setuptools >= 81 no longer ships pkg_resources, which model_zoo.py only uses to find its configs folder
# (installed next to it as package data): look it up beside the module instead.
"$PY" - "$src/detectron2/model_zoo/model_zoo.py" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
text = text.replace("import pkg_resources\n", "")
text = text.replace(
    'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
    'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
)
if "pkg_resources" in text:
    sys.exit(f"{path}: unexpected pkg_resources use left; update scripts/install_detectron2.sh")
open(path, "w").write(text)
PY
# --no-build-isolation: compile against the torch in .venv (an isolated build would fetch another torch).
MAX_JOBS=${MAX_JOBS:-2} FORCE_CUDA=0 "$PY" -m pip install -q --no-build-isolation --use-pep517 --no-deps "$src" \
  >>"$log" 2>&1 || fail "compiling"
(cd / && "$PY" -c "import detectron2._C, detectron2.model_zoo as z; z.get_config_file('COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml')") \
  >>"$log" 2>&1 || fail "import check"
echo "$want" > "$stamp"
echo "==> Detectron2 ${D2_COMMIT:0:7} installed"
