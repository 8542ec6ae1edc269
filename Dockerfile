# Image for the vendor-tool steps of the AMC-on-FPGA toolchain: the project, its pinned Python
# environment and FINN's external dependencies. Vivado/Vitis (and XRT for Alveo) are not in the
# image: they are mounted from the host at run time (see README, "Docker"):
#   docker build -t amc-fpga .
#   docker run --rm -v /tools/Xilinx:/tools/Xilinx -v $PWD/build:$PWD/build amc-fpga \
#       python build.py --model bacalhaunet --board pynq-z2 --out $PWD/build/bacalhaunet_pynq-z2
FROM python:3.11.7-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Build tools: finn compiles its simulator binding and the FIFO-sizing simulations. git, curl,
# unzip, xz: FINN's external dependencies. The rest is what Vivado/Vitis need on Debian even in
# batch mode: libtinfo5/libncurses5 (their shells), X11 client and font libraries,
# libc6-dev-i386 (xsim's compiler), and a UTF-8 locale.
# Debian package versions follow the pinned base image's release (bookworm).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential ca-certificates curl git unzip xz-utils locales \
        libtinfo5 libncurses5 libncursesw5 libc6-dev-i386 \
        libx11-6 libxext6 libxrender1 libxtst6 libxi6 libsm6 libglib2.0-0 \
        libfreetype6 fontconfig \
    && sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen \
    && locale-gen \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

# FINN's external dependencies at exactly the versions finn-plus 1.6.1 pins in
# finn/interface/external_dependencies.yaml (tests/test_dockerfile.py compares every ARG with
# it), laid out below FINN_DEPS as its `finn deps update` would (that command needs Vivado).
# HLS layers include finn-hlslib and attention-hlslib; FIFO sizing builds with nlohmann/json;
# Zynq block designs take board files: pynq-z2, avnet-bdf (ultra96-v2), kv260-som-bdf (kv260).
# ZCU104's board files come with Vivado. Left out: AuroraFlow (multi-FPGA only) and the board
# files of boards this toolchain does not target. The two archives are not commit-pinned by
# finn-plus either; pass --build-arg <NAME>_SHA256=... to check them.
ENV FINN_DEPS=/opt/finn_deps
ARG FINN_HLSLIB_URL=https://github.com/Xilinx/finn-hlslib.git
ARG FINN_HLSLIB_COMMIT=8d979e2bdced486dd25d26607d1ff5ae327ed6a8
ARG ATTENTION_HLSLIB_URL=https://github.com/iksnagreb/attention-hlslib.git
ARG ATTENTION_HLSLIB_COMMIT=afc9720f10e551e1f734e137b21bb6d0a8342177
ARG AVNET_BDF_URL=https://github.com/Avnet/bdf.git
ARG AVNET_BDF_COMMIT=2d49cfc25766f07792c0b314489f21fe916b639b
ARG KV260_SOM_BDF_URL=https://github.com/Xilinx/XilinxBoardStore.git
ARG KV260_SOM_BDF_COMMIT=98e0d3efc901f0b974006bc4370c2a7ad8856c79
ARG KV260_SOM_BDF_SUBDIRECTORY=boards/Xilinx/kv260_som
ARG PYNQ_Z2_URL=https://dpoauwgwqsy2x.cloudfront.net/Download/pynq-z2.zip
ARG PYNQ_Z2_SHA256=
ARG NLOHMANN_JSON_URL=https://github.com/nlohmann/json/releases/download/v3.12.0/json.tar.xz
ARG NLOHMANN_JSON_SHA256=
COPY docker/fetch_dep.sh /usr/local/bin/fetch_dep.sh
RUN fetch_dep.sh git "$FINN_HLSLIB_URL" "$FINN_HLSLIB_COMMIT" "$FINN_DEPS/finn-hlslib" \
    && fetch_dep.sh git "$ATTENTION_HLSLIB_URL" "$ATTENTION_HLSLIB_COMMIT" \
        "$FINN_DEPS/attention-hlslib" \
    && fetch_dep.sh git "$AVNET_BDF_URL" "$AVNET_BDF_COMMIT" "$FINN_DEPS/board_files" \
    && fetch_dep.sh git "$KV260_SOM_BDF_URL" "$KV260_SOM_BDF_COMMIT" \
        "$FINN_DEPS/board_files/${KV260_SOM_BDF_SUBDIRECTORY##*/}" "$KV260_SOM_BDF_SUBDIRECTORY" \
    && fetch_dep.sh archive "$PYNQ_Z2_URL" "$FINN_DEPS/board_files" "$PYNQ_Z2_SHA256" \
    && fetch_dep.sh archive "$NLOHMANN_JSON_URL" "$FINN_DEPS/nlohmann_json" "$NLOHMANN_JSON_SHA256"

WORKDIR /opt/amc-fpga
COPY requirements.lock requirements-nodeps.txt pyproject.toml README.md run ./
COPY flows ./flows
COPY models ./models
COPY hw ./hw
COPY docker ./docker
COPY build.py ./

# Same set-up as on a developer machine: ./run creates .venv from requirements.lock.
ENV AMC_VENV=/opt/amc-fpga/.venv
RUN ./run python -c "import finn, brevitas, qonnx, torch"

# What finn-plus and the tools read at run time. FINN_BUILD_DIR is a fallback: build.py points
# it into each build's OUT/finn. The entrypoint sources Vivado/Vitis AMC_XILINX_VERSION from
# AMC_XILINX_ROOT (the host's installation, mounted there) and XRT from /opt/xilinx/xrt; Alveo
# platforms are looked up in PLATFORM_REPO_PATHS (mount the host's /opt/xilinx).
ENV PATH=/opt/amc-fpga/.venv/bin:$PATH \
    FINN_BUILD_DIR=/build/finn \
    AMC_XILINX_ROOT=/tools/Xilinx \
    AMC_XILINX_VERSION=2024.2 \
    PLATFORM_REPO_PATHS=/opt/xilinx/platforms \
    XILINX_LOCAL_USER_DATA=no
RUN mkdir -p "$FINN_BUILD_DIR"
ENTRYPOINT ["/opt/amc-fpga/docker/entrypoint.sh"]
CMD ["python", "build.py", "--help"]
