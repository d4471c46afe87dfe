#!/usr/bin/env bash
# Build Horovod 0.28.1 against the installed mxnet (Gloo controller, CPU ops; NCCL too when
# the machine has CUDA) and install it. The wheel is built once and cached; later runs on the
# same machine install the cached wheel in seconds. Run inside the environment that has
# openaff and mxnet installed (the build links against that mxnet).
#   OPENAFF_WHEEL_CACHE  where the wheel is kept (default ~/.cache/openaff/wheels)
set -euo pipefail
cache="${OPENAFF_WHEEL_CACHE:-$HOME/.cache/openaff/wheels}"
python - <<'PY' || { echo "install_horovod: mxnet is not importable here; install openaff first" >&2; exit 1; }
import mxnet
PY
if python -c "import horovod.mxnet" 2>/dev/null; then
    exit 0
fi
mkdir -p "$cache"
# the wheel links against this mxnet: key the cache on mxnet's version and the python tag
tag="$(python -c 'import mxnet, sys; print(f"mxnet{mxnet.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')"
wheel_dir="$cache/$tag"
if ! ls "$wheel_dir"/horovod-0.28.1-*.whl >/dev/null 2>&1; then
    echo "install_horovod: building horovod 0.28.1 against $tag (about 5-15 minutes on 2 cores)" >&2
    pip install -q wheel setuptools packaging psutil pyyaml cloudpickle
    # horovod 0.28.1's CMake files predate CMake 4
    command -v cmake >/dev/null || pip install -q 'cmake>=3.13,<4'
    HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MPI=1 \
        pip wheel --no-deps --no-build-isolation -w "$wheel_dir" horovod==0.28.1
fi
pip install -q "$(ls "$wheel_dir"/horovod-0.28.1-*.whl | head -n 1)"
python -c "import horovod.mxnet" || { echo "install_horovod: horovod.mxnet does not import" >&2; exit 1; }
