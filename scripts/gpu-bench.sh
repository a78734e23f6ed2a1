#!/usr/bin/env bash
# The accelerator's checks and figures on a real GPU, in one run (issue 15).
#
#   scripts/gpu-bench.sh prepare   on the build machine (no GPU needed)
#   scripts/gpu-bench.sh run       on the GPU machine, from the repository root
#
# `prepare` builds the release test and bench binaries with feature `gpu`
# and copies them, with the Vulkan loader, into .gpu-carry/ (ignored by
# .gitignore), so that a machine with an NVIDIA driver but without
# Rust, crates.io or the loader can run them: carry `.gpu-carry` along (it
# is the only path the run needs besides the script). The loader is
# libvulkan.so.1 from this machine (/usr/lib/x86_64-linux-gnu, Debian's
# libvulkan1); it needs only glibc. Another way to bring it is to download
# the .deb here (`apt-get download libvulkan1`) and unpack it there with
# `dpkg -x`; `run` uses the carried copy through LD_LIBRARY_PATH only when
# `ldconfig -p` finds no libvulkan.so.1 there.
#
# With this workplace's device tool: run `prepare` in the checkout the tool
# sends (the session's own, not a helper's worktree), then one call such as
#   run(command="scripts/gpu-bench.sh run", carry=[".gpu-carry"], timeout_s=540)
# and, if it fails for the machine's sake, once more. Nothing is built there.
#
# `run` (estimated 2-4 minutes on an H200, never run there yet; 8 at most
# by its timeouts):
#   1. prints the GPU, the driver and the Vulkan driver file it uses
#      (nvidia_icd.json from /usr/share/vulkan/icd.d, /etc/vulkan/icd.d or
#      /usr/local/nvidia/share/vulkan/icd.d; VK_DRIVER_FILES if set wins);
#   2. runs the accelerator's unit tests and tests/accel.rs with
#      SHARED_NOTHING_REQUIRE_GPU=1, so each must run on the wgpu path:
#      every built-in kernel bit-identical to the CPU reference, saxpy
#      included (its product goes through an XOR with a runtime zero so
#      that the driver cannot fuse multiply and add into an FMA; if the
#      driver still contracts, the saxpy cases fail and say so);
#   3. prints the table of benches/accel_table for 4 KiB to 1 GiB.
# With cargo on the machine and no .gpu-carry it builds first (add ~3 min).
# Everything goes to $OUT (or ./gpu-bench-out): gpu-bench.log, the whole
# log, and accel-table.md, the table alone.
set -u -o pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
carry="$root/.gpu-carry"

prepare() {
    cd "$root" || exit 1
    export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
    rm -rf "$carry" && mkdir -p "$carry/bin" "$carry/lib"
    local tests bench
    tests=$(cargo test --release --features gpu --lib --test accel --no-run --message-format=json) || exit 1
    bench=$(cargo bench --features gpu --bench accel --no-run --message-format=json) || exit 1
    printf '%s\n%s\n' "$tests" "$bench" | python3 -c '
import json, shutil, sys
names = {("lib", "shared_nothing"): "accel-unit-tests", ("test", "accel"): "accel-tests",
         ("bench", "accel"): "accel-bench"}
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kind = m["target"]["kind"][0]
    key = (kind, m["target"]["name"])
    if key in names:
        shutil.copy(m["executable"], sys.argv[1] + "/bin/" + names[key])
        print("carried", names[key], "from", m["executable"])
' "$carry" || exit 1
    for b in accel-unit-tests accel-tests accel-bench; do
        [ -x "$carry/bin/$b" ] || { echo "missing $b"; exit 1; }
        strip --strip-debug "$carry/bin/$b" 2>/dev/null || true
    done
    cp -L /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$carry/lib/" 2>/dev/null ||
        echo "no libvulkan.so.1 here: the GPU machine must have its own loader"
    git rev-parse HEAD >"$carry/commit"
    du -sh "$carry"
}

run() {
    cd "$root" || exit 1
    local out=${OUT:-$root/gpu-bench-out}
    mkdir -p "$out"
    exec > >(tee -a "$out/gpu-bench.log") 2>&1
    echo "gpu-bench run, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(cat "$carry/commit" 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
        echo "no Vulkan loader installed: using the carried one"
        export LD_LIBRARY_PATH="$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    if [ -z "${VK_DRIVER_FILES:-}" ]; then
        for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json \
            /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; do
            if [ -f "$f" ]; then export VK_DRIVER_FILES=$f; break; fi
        done
    fi
    # Older loaders read the old name. (Never set either one empty: the
    # loader then finds no driver at all.)
    if [ -n "${VK_DRIVER_FILES:-}" ]; then export VK_ICD_FILENAMES=$VK_DRIVER_FILES; fi
    echo "Vulkan driver file: ${VK_DRIVER_FILES:-none found (the loader searches its defaults)}"
    [ -n "${VK_DRIVER_FILES:-}" ] && cat "$VK_DRIVER_FILES"
    export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
    export SHARED_NOTHING_REQUIRE_GPU=1 RUST_BACKTRACE=1

    local bin="$carry/bin"
    if [ ! -x "$bin/accel-tests" ]; then
        command -v cargo >/dev/null || { echo "no .gpu-carry and no cargo: run prepare first"; exit 1; }
        echo "building (no .gpu-carry)"
        timeout 300 "$0" prepare || exit 1
    fi
    local status=0
    echo "## unit tests (accel)"
    timeout 120 "$bin/accel-unit-tests" accel || status=1
    echo "## tests/accel.rs"
    timeout 120 "$bin/accel-tests" || status=1
    echo "## table"
    SN_ACCEL_SIZES=${SN_ACCEL_SIZES:-4K,16K,64K,256K,1M,4M,16M,64M,256M,1G} \
        SN_ACCEL_CELL_MS=${SN_ACCEL_CELL_MS:-200} SN_ACCEL_COPY_BYTES=${SN_ACCEL_COPY_BYTES:-1G} \
        timeout 240 "$bin/accel-bench" table | tee "$out/accel-table.md" || status=1
    echo "gpu-bench done, status $status, $(date -u +%H:%M:%SZ)"
    return $status
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
