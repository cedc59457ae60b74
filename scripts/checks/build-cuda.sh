#!/usr/bin/env bash
# Builds skyscribe with `--features cuda` on a machine that has neither a GPU nor CUDA installed,
# so that a GPU session only has to run it: CUDA 13.0's compiler, headers and libraries come from
# NVIDIA's wheels on PyPI (`pip download`, nothing installed), and the linker gets a stub
# `libcuda.so` (the real one is part of NVIDIA's driver, on the machine that runs the binary).
# CUDA 13.0 matches the driver seen on the project's lent H200s (580.x): an nvcc newer than the
# driver writes PTX the driver refuses to load.
#
#   bash scripts/checks/build-cuda.sh [TARGET_DIR]        # default target/cuda; needs python3 -m pip
#
# The binary is TARGET_DIR/release/skyscribe. candle links CUDA's libraries when the program
# starts, so it runs only where NVIDIA's driver and CUDA 13's cuBLAS, cuRAND and the runtime are
# (LD_LIBRARY_PATH), and fails to start elsewhere. CUDA_COMPUTE_CAP picks the GPU generation
# candle's kernels are compiled for (default 90: Hopper, the H100 and H200).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=$(realpath -m "${1:-target/cuda}")
tools=$target/cuda-13.0
mkdir -p "$tools/wheels" "$tools/link"
python3 -m pip download --no-deps --quiet --dest "$tools/wheels" \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
for wheel in "$tools"/wheels/*.whl; do unzip -q -o "$wheel" -d "$tools"; done
cuda=$tools/nvidia/cu13
# The wheels carry only versioned libraries; the linker looks for the plain names.
for lib in cublas.so.13 cublasLt.so.13 cudart.so.13 curand.so.10 nvrtc.so.13; do
  ln -sf "$cuda/lib/lib$lib" "$tools/link/lib${lib%.so.*}.so"
done
export CUDA_HOME=$cuda PATH=$cuda/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=$target LIBRARY_PATH=$tools/link
# The library first (no linking): its cudarc names every driver function the binary calls,
# which the stub then defines (empty; never called here), under the driver's soname.
cargo build --release --features cuda --lib
cudarc=$(ls -t "$target"/release/deps/libcudarc-*.rlib | head -n 1)
nm -u "$cudarc" 2>/dev/null | awk '$2 ~ /^cu[A-Z]/ { print "void " $2 "(void) {}" }' | sort -u \
  >"$tools/link/libcuda-stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$tools/link/libcuda.so" "$tools/link/libcuda-stub.c"
cargo build --release --features cuda
echo "$target/release/skyscribe"
