#!/usr/bin/env bash
# Entry point of the amc-fpga image: make the host's Xilinx tools, mounted at AMC_XILINX_ROOT
# (default /tools/Xilinx), usable, then run the command in the project's environment (./run).
# It sources the settings64.sh of Vivado and Vitis AMC_XILINX_VERSION (default 2024.2) in
# either install layout, <root>/Vivado/<version> (up to 2024.2) or <root>/<version>/Vivado
# (2025.1 on), and XRT's setup.sh if /opt/xilinx/xrt is mounted. Without the tools the
# toolchain still runs and stops after code generation, saying what is missing.
set -euo pipefail

root="${AMC_XILINX_ROOT:-/tools/Xilinx}"
version="${AMC_XILINX_VERSION:-2024.2}"

source_settings() {
    # Xilinx's scripts read unset variables: relax the shell's checks while they run.
    set +eu
    # shellcheck disable=SC1090
    source "$1" >/dev/null
    set -eu
}

for tool in Vivado Vitis Vitis_HLS; do
    for settings in "$root/$tool/$version/settings64.sh" "$root/$version/$tool/settings64.sh"; do
        if [ -f "$settings" ]; then source_settings "$settings"; fi
    done
done
if [ -f /opt/xilinx/xrt/setup.sh ]; then source_settings /opt/xilinx/xrt/setup.sh; fi

if [ -n "${XILINX_VIVADO:-}" ]; then
    # finn's simulator binding loads Vivado's XSI libraries into the Python process, whose
    # loader reads LD_LIBRARY_PATH only at start-up: set it here, as finn's own command line
    # does (finn/interface/run_finn.py, xilinx_ld_library_paths).
    libs="/lib/x86_64-linux-gnu:$XILINX_VIVADO/lib/lnx64.o"
    if [ -n "${XILINX_HLS:-}" ]; then libs="$libs:$XILINX_HLS/lnx64/tools/fpo_v7_1"; fi
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    echo "amc-fpga: no Vivado $version under $root (mount it with -v /tools/Xilinx:$root);" \
        "the vendor-tool steps will be skipped." >&2
fi

exec /opt/amc-fpga/run "$@"
