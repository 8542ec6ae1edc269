"""Flows: data, synthetic generation, training and the build steps of the AMC-on-FPGA toolchain."""
