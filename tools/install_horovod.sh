#!/usr/bin/env bash
# Build Horovod 0.28.1 against the installed mxnet (Gloo controller, CPU ops; NCCL GPU ops when
# mxnet is a CUDA build and the CUDA toolkit and NCCL are here) and install it. The wheel is
# built once and cached; later runs on the same machine install the cached wheel in seconds.
# Run inside the environment that has openaff and mxnet installed (the build links against
# that mxnet).
#   OPENAFF_WHEEL_CACHE     where the wheel is kept (default ~/.cache/openaff/wheels)
#   HOROVOD_GPU_OPERATIONS  NCCL or MPI: forces that choice (empty: CPU ops only)
#   HOROVOD_NCCL_HOME, NCCL_HOME, HOROVOD_CUDA_HOME, CUDA_HOME  where to look first
#   --print-config          say what would be built, and with which variables; build nothing
set -euo pipefail
cache="${OPENAFF_WHEEL_CACHE:-$HOME/.cache/openaff/wheels}"
print_only=0
[[ "${1:-}" == "--print-config" ]] && print_only=1
note() { echo "install_horovod: $*" >&2; }

# one import of mxnet (seconds): is it a CUDA build, and the tag of the wheel it needs
read -r mxnet_cuda mxnet_tag <<<"$(python - 2>/dev/null <<'PY'
import sys
import mxnet
from mxnet import runtime
print(int(runtime.Features().is_enabled('CUDA')),
      f'mxnet{mxnet.__version__}-py{sys.version_info[0]}{sys.version_info[1]}')
PY
)" || true
[[ -n "${mxnet_tag:-}" ]] || { note "mxnet is not importable here; install openaff first"; exit 1; }

# The choice of GPU operations follows the installed mxnet, not the machine: a CPU build of
# mxnet must get a CPU Horovod even where nvcc exists (Horovod refuses GPU ops against it), and
# a CUDA build gets NCCL all-reduce when it can be built (without it, Horovod copies every GPU
# gradient through host memory for Gloo).

find_nvcc() {
    local home="${HOROVOD_CUDA_HOME:-${CUDA_HOME:-}}"
    if [[ -n "$home" ]]; then  # a named toolkit only: never a different one from PATH
        [[ -x "$home/bin/nvcc" ]] && echo "$home/bin/nvcc"
        return 0
    fi
    command -v nvcc 2>/dev/null && return 0
    [[ -x /usr/local/cuda/bin/nvcc ]] && echo /usr/local/cuda/bin/nvcc
    return 0
}

# "include-dir lib-dir link" of the first NCCL with its development files (nccl.h and
# libnccl.so or libnccl_static.a, which the build links; a runtime-only libnccl.so.2 is not
# enough) under $1...
find_nccl() {
    local root include lib
    for root in "$@"; do
        [[ -n "$root" && -f "$root/include/nccl.h" ]] || continue
        include="$root/include"
        for lib in "$root/lib" "$root/lib64" "$root/lib/x86_64-linux-gnu" "$root/lib/aarch64-linux-gnu"; do
            if [[ -f "$lib/libnccl_static.a" ]]; then echo "$include $lib STATIC"; return 0; fi
            if [[ -e "$lib/libnccl.so" ]]; then echo "$include $lib SHARED"; return 0; fi
        done
    done
    return 0
}

# the CUDA version (major.minor) a pip wheel of mxnet was built for: mxnet-cu112 -> 11.2
mxnet_cuda_version() {
    python - <<'PY'
import importlib.metadata as md, re
for dist in md.distributions():
    match = re.fullmatch(r'mxnet[-_]cu(\d+)(\d)', (dist.metadata['Name'] or '').lower())
    if match:
        print(f'{match[1]}.{match[2]}')
        break
PY
}

build_env=(HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1
           HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MPI=1)
if [[ -n "${HOROVOD_GPU_OPERATIONS+set}" ]]; then
    ops="${HOROVOD_GPU_OPERATIONS:-}"
    if [[ -n "$ops" && "$ops" != NCCL && "$ops" != MPI ]]; then
        note "HOROVOD_GPU_OPERATIONS=$ops: Horovod takes NCCL, MPI or nothing (CPU operations)"
        exit 1
    fi
    if [[ -n "$ops" && "$mxnet_cuda" != 1 ]]; then
        note "HOROVOD_GPU_OPERATIONS=$ops needs a CUDA build of mxnet (e.g. mxnet-cu112); this one is a CPU build"
        exit 1
    fi
    [[ -n "$ops" ]] && build_env+=("HOROVOD_GPU_OPERATIONS=$ops")
    if [[ "$ops" == MPI ]]; then  # MPI GPU operations need the MPI controller
        build_env=("${build_env[@]/HOROVOD_WITHOUT_MPI=1/HOROVOD_WITH_MPI=1}")
    fi
    variant="${ops:-cpu}"
    variant="${variant,,}"
    note "HOROVOD_GPU_OPERATIONS=${ops} given: building ${variant} operations as asked"
elif [[ "$mxnet_cuda" != 1 ]]; then
    variant=cpu
    note "mxnet is a CPU build: Horovod with CPU (Gloo) operations"
else
    nvcc="$(find_nvcc)"
    if [[ -z "$nvcc" ]]; then
        note "mxnet is a CUDA build, so Horovod must be built with CUDA: no nvcc found (put the CUDA toolkit's bin on PATH or set CUDA_HOME)"
        exit 1
    fi
    cuda_home="$(cd "$(dirname "$nvcc")/.." && pwd)"
    build_env+=("HOROVOD_CUDA_HOME=$cuda_home")
    nvcc_version="$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)"
    wheel_version="$(mxnet_cuda_version)"
    if [[ -n "$wheel_version" && -n "$nvcc_version" && "${wheel_version%%.*}" != "${nvcc_version%%.*}" ]]; then
        note "warning: mxnet was built for CUDA $wheel_version but $nvcc is CUDA $nvcc_version; set CUDA_HOME to a CUDA ${wheel_version%%.*} toolkit if the build or the first GPU all-reduce fails"
    fi
    nvidia_nccl="$(python -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)"
    read -r nccl_include nccl_lib nccl_link <<<"$(find_nccl "${HOROVOD_NCCL_HOME:-}" "${NCCL_HOME:-}" \
        "$cuda_home" /usr /usr/local "$nvidia_nccl")" || true
    if [[ -n "${nccl_include:-}" ]]; then
        variant=nccl
        build_env+=(HOROVOD_GPU_OPERATIONS=NCCL "HOROVOD_NCCL_INCLUDE=$nccl_include"
                    "HOROVOD_NCCL_LIB=$nccl_lib" "HOROVOD_NCCL_LINK=$nccl_link")
        note "mxnet is a CUDA build: Horovod with NCCL GPU operations (CUDA $nvcc_version at $cuda_home, NCCL in $nccl_lib)"
    else
        variant=cuda
        note "warning: mxnet is a CUDA build but no NCCL development files were found (nccl.h with libnccl.so or libnccl_static.a; set HOROVOD_NCCL_HOME): building without NCCL, so GPU gradients are all-reduced through host memory"
    fi
fi

# the wheel links against this mxnet and has one set of GPU operations: key the cache on both
tag="$mxnet_tag-$variant"
wheel_dir="$cache/$tag"
if (( print_only )); then
    echo "variant=$variant"
    echo "wheel_dir=$wheel_dir"
    printf '%s\n' "${build_env[@]}"
    exit 0
fi

installed="$(python - 2>/dev/null <<'PY' || true
import horovod.mxnet as hvd
print('nccl' if hvd.nccl_built() else 'cuda' if hvd.cuda_built() else 'cpu')
PY
)"
wanted="$variant"
[[ "$variant" == mpi ]] && wanted=cuda  # CUDA-aware MPI ops report cuda_built, not nccl_built
if [[ "$installed" == "$wanted" ]]; then
    exit 0
fi
if [[ -n "$installed" ]]; then
    note "the installed Horovod has $installed operations; replacing it with the $variant build"
    pip uninstall -q -y horovod
fi
mkdir -p "$cache"
if ! ls "$wheel_dir"/horovod-0.28.1-*.whl >/dev/null 2>&1; then
    note "building horovod 0.28.1 against $tag (about 5-15 minutes on 2 cores)"
    pip install -q wheel setuptools packaging psutil pyyaml cloudpickle
    # horovod 0.28.1's CMake files predate CMake 4
    command -v cmake >/dev/null || pip install -q 'cmake>=3.13,<4'
    # HOROVOD_GPU_OPERATIONS must not leak in from the caller on the CPU branch
    env -u HOROVOD_GPU_OPERATIONS "${build_env[@]}" \
        pip wheel --no-deps --no-build-isolation -w "$wheel_dir" horovod==0.28.1
fi
pip install -q "$(ls "$wheel_dir"/horovod-0.28.1-*.whl | head -n 1)"
python -c "import horovod.mxnet" || { note "horovod.mxnet does not import"; exit 1; }
