# --- scale-out over MPI (feature `mpi`): append to .ci/run after the two backends -------------
# The default build above never needs MPI; this part installs Open MPI and the bindings' build
# dependency (libclang, for bindgen) when missing, checks the feature's code and runs
# tests/mpi.rs, which launches `mpirun -np 1|2|3` on the Vulkan software adapter.
mpi_need=()
command -v mpirun >/dev/null 2>&1 || mpi_need+=(openmpi-bin)
[ -e /usr/include/x86_64-linux-gnu/mpi/mpi.h ] || [ -e /usr/include/mpi.h ] \
    || ls /usr/lib/*/openmpi/include/mpi.h >/dev/null 2>&1 || mpi_need+=(libopenmpi-dev)
ldconfig -p | grep -q 'libclang' || mpi_need+=(libclang-dev)
if [ ${#mpi_need[@]} -gt 0 ]; then
    echo "installing: ${mpi_need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${mpi_need[@]}"
fi
# Open MPI refuses to start as root unless told, and a container may have fewer cores than ranks.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cargo clippy --release --all-targets --features mpi -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --features mpi
echo "=== MPI: WGPU_BACKEND=vulkan, mpirun -np 1, 2, 3"
WGPU_BACKEND=vulkan cargo test --release --features mpi --test mpi
WGPU_BACKEND=vulkan cargo test --release --features mpi --lib dist
WGPU_BACKEND=vulkan cargo test --release --features mpi --doc dist
