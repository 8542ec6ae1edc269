# Image for the vendor-tool steps of the AMC-on-FPGA toolchain: the project and its pinned
# Python environment; Vivado/Vitis are mounted from the host at run time (see README).
FROM python:3.11.7-slim-bookworm

# Build tools for packages that compile, git for FINN's HLS libraries, libs Vivado expects.
# Debian package versions follow the pinned base image's release (bookworm).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential git libtinfo5 locales \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/amc-fpga
COPY requirements.lock requirements-nodeps.txt pyproject.toml README.md run ./
COPY flows ./flows
COPY models ./models
COPY hw ./hw
COPY build.py ./

# Same set-up as on a developer machine: ./run creates .venv from requirements.lock.
ENV AMC_VENV=/opt/amc-fpga/.venv
RUN ./run python -c "import finn, brevitas, qonnx, torch"

ENV PATH=/opt/amc-fpga/.venv/bin:$PATH
ENTRYPOINT ["./run"]
CMD ["python", "build.py", "--help"]
