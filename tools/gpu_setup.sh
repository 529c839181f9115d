# Sourced by tools/gpu_reproduce.sh and tools/gpu_speed.sh: prepares a bare GPU
# machine (Python with JAX or PyTorch, NumPy, Pillow; no Keras, no TensorFlow, no
# network) from a checkout. Expects REPO (the checkout's root, the current folder),
# PYTHON and a `say` function; sets PYTHONPATH (Keras installed from .whl/ into
# SITE unless it already imports, then the checkout) and DATA_DIR / data_args
# (--data-dir DATA_DIR, or nothing where no data folder exists).
#
# The wheels: before copying the checkout to the machine, download what Keras needs
# into the checkout's ignored folder .whl/:
#
#   pip download --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 keras==3.15.1 namex optree --no-deps -d .whl
#
# (optree needs typing_extensions, which PyTorch brings; add typing-extensions to
# that list for a machine without it.) The data: ../shared/datasets, DATA_DIR, or
# the ignored folder .device_carry/datasets.

if "$PYTHON" -c "import keras" 2>/dev/null; then
  say "keras already importable: $("$PYTHON" -c 'import keras; print(keras.__version__)')"
else
  shopt -s nullglob
  wheels=(.whl/*.whl)
  shopt -u nullglob
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "keras is not importable and .whl/ holds no wheels; see tools/gpu_setup.sh." >&2
    exit 2
  fi
  SITE=${SITE:-$(mktemp -d "${TMPDIR:-/tmp}/keras-site.XXXXXX")}
  say "installing ${wheels[*]} into $SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PYTHON" -c "import keras; print('keras', keras.__version__, keras.backend.backend())"; then
    echo "keras does not import after installing .whl/ (see above; optree needs" \
         "typing_extensions: add its wheel to .whl/ where the machine lacks it)." >&2
    exit 2
  fi
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO"     # keras_margins and applications

if [ -z "${DATA_DIR:-}" ]; then
  for candidate in ../shared/datasets .device_carry/datasets; do
    if [ -d "$candidate" ]; then DATA_DIR=$candidate; break; fi
  done
fi
data_args=()
if [ -n "${DATA_DIR:-}" ]; then
  [ -d "$DATA_DIR" ] || { echo "DATA_DIR=$DATA_DIR is not a folder." >&2; exit 2; }
  data_args=(--data-dir "$DATA_DIR")
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
fi
