"""Vendor-tool build steps: HLS IP, FIFO sizing, stitched IP, out-of-context synthesis, bitfile.

They continue the flow after `codegen` on the HW-only dataflow model and need AMD's tools
(`hw.vendor` lists what each step needs). Every step checks its tools before any work and
raises `ToolchainError` with `hw.vendor.vendor_message` when something is missing; the tools
themselves run only inside finn-plus's transformations (Vivado-only modules are imported inside
the steps), whose log, including the tools' output, goes to `OUT/logs/<step>.log`. Each step
writes what it produced to `report/<step>.json`, and the Vivado version it ran with to
`report/toolchain.json`.

Nothing here verifies against the golden model: that happens on the graph up to `codegen`;
the vendor steps turn the verified graph into hardware without changing what it computes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.config import BuildConfig
from flows.errors import ToolchainError
from flows.fileio import atomic_write_text
from flows.hw_steps import _finn
from flows.steps import ONNX_CHECKPOINT, build_step
from hw.vendor import (
    BITFILE_NAMES,
    VENDOR_STEPS,
    prepare_vendor_environment,
    require_tools,
    vivado_version,
)

__all__ = ["VENDOR_STEPS", "logs_dir", "step_bitfile", "step_fifo_depths", "step_ipgen",
           "step_stitch", "step_synth_ooc"]


def logs_dir(cfg: BuildConfig) -> Path:
    return cfg.out_dir / "logs"


def _clk_ns(cfg: BuildConfig) -> float:
    return 1000.0 / cfg.effective_clock_mhz


def _write_report(cfg: BuildConfig, name: str, data) -> Path:
    path = cfg.report_dir / name
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
    return path


@contextmanager
def _vendor_step(step: str, cfg: BuildConfig) -> Iterator[None]:
    """Check the tools of `step`, prepare finn-plus and its environment, and send finn's log
    (which carries the output of every tool it launches) to OUT/logs/<step>.log."""
    require_tools(step, cfg)
    _finn(cfg)
    prepare_vendor_environment()
    from finn.util.exception import FINNUserError
    from finn.util.logging import log as finn_log

    logs = logs_dir(cfg)
    logs.mkdir(parents=True, exist_ok=True)
    _record_toolchain(cfg, step)
    handler = logging.FileHandler(logs / f"{step}.log", mode="w")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = finn_log.level
    finn_log.addHandler(handler)
    finn_log.setLevel(logging.DEBUG)
    try:
        yield
    except (FINNUserError, subprocess.CalledProcessError) as exc:
        # A tool failed or refused the design: finn's message names the tool's own log; add
        # ours, which has the tool's output. Anything else escaping is a bug and keeps its
        # traceback.
        problem = str(exc).rstrip(".")
        raise ToolchainError(f"{step} failed: {type(exc).__name__}: {problem}. The tools' "
                             f"output is in {logs / f'{step}.log'}.") from exc
    finally:
        finn_log.removeHandler(handler)
        finn_log.setLevel(level)
        handler.close()


def _record_toolchain(cfg: BuildConfig, step: str) -> None:
    path = cfg.report_dir / "toolchain.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record[step] = {
        "vivado": vivado_version(logs_dir(cfg) / "vivado_version.log"),
        "XILINX_VIVADO": os.environ.get("XILINX_VIVADO"),
        "XILINX_HLS": os.environ.get("XILINX_HLS"),
        "XILINX_VITIS": os.environ.get("XILINX_VITIS"),
    }
    _write_report(cfg, "toolchain.json", record)


def _ip_layers(model) -> list[dict]:
    from qonnx.custom_op.registry import getCustomOp

    layers = []
    for node in model.graph.node:
        inst = getCustomOp(node)
        layers.append({"name": node.name, "op_type": node.op_type,
                       "ipgen_path": inst.get_nodeattr("ipgen_path") or None,
                       "ip_path": inst.get_nodeattr("ip_path") or None})
    return layers


def _generate_ip(model, cfg: BuildConfig):
    """finn's step_hw_codegen + step_hw_ipgen: fill code for nodes without it, compile every HLS
    node that has no IP yet with Vitis HLS, and make the RTL nodes' Verilog paths absolute."""
    from finn.transformation.fpgadataflow.hlssynth_ip import HLSSynthIP
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.replace_verilog_relpaths import (
        ReplaceVerilogRelPaths,
    )

    model = model.transform(PrepareIP(cfg.fpga_part, _clk_ns(cfg)))
    model = model.transform(HLSSynthIP(cfg.fpga_part))
    return model.transform(ReplaceVerilogRelPaths())


def _dataflow_build_config(cfg: BuildConfig):
    """finn's own build configuration for this build, for the transformations that take one
    (FIFO-sizing simulation, Vitis linking); every other setting keeps finn's default."""
    from finn.builder.build_dataflow_config import (
        DataflowBuildConfig,
        DataflowOutputType,
        ShellFlowType,
    )

    board = cfg.board_record
    return DataflowBuildConfig(
        output_dir=str(cfg.out_dir), synth_clk_period_ns=_clk_ns(cfg), board=board.finn_board,
        fpga_part=cfg.fpga_part, shell_flow_type=ShellFlowType(board.shell_flow),
        vitis_platform=board.vitis_platform,
        generate_outputs=[DataflowOutputType.STITCHED_IP, DataflowOutputType.OOC_SYNTH,
                          DataflowOutputType.BITFILE])


@build_step("ipgen", ONNX_CHECKPOINT)
def step_ipgen(model, cfg: BuildConfig):
    """Compile every HLS layer into Vivado IP with Vitis HLS (finn's HLSSynthIP).

    RTL layers already have their sources from `codegen`. Code that is missing (e.g. a build
    resumed on another machine) is generated again first. `report/ipgen.json` lists each
    layer's IP and Vitis HLS's post-synthesis resource estimate.
    """
    with _vendor_step("ipgen", cfg):
        from finn.analysis.fpgadataflow.hls_synth_res_estimation import hls_synth_res_estimation

        model = _generate_ip(model, cfg)
        hls_resources = model.analysis(hls_synth_res_estimation)
        _write_report(cfg, "ipgen.json", {"layers": _ip_layers(model),
                                          "hls_synth_resources": hls_resources})
    return model


@build_step("fifo_depths", ONNX_CHECKPOINT)
def step_fifo_depths(model, cfg: BuildConfig):
    """Size the FIFOs between layers by simulation and insert them (finn's default strategy).

    This is the chain of finn's step_set_fifo_depths for its default auto_fifo_strategy
    "distributed_sim": data width converters are inserted and every layer is simulated in
    parallel with Vivado's XSI (BuildSimulation, RunLayerParallelSimulation), the measured depths
    are applied as FIFOs (ApplySimulatedFIFOSizes), and the new FIFOs and converters get their
    IP. `report/fifo_depths.json` lists every FIFO's depth and memory style.
    """
    with _vendor_step("fifo_depths", cfg):
        import finn.xsi
        from finn.transformation.fpgadataflow.set_fifo_depths import ApplySimulatedFIFOSizes
        from finn.transformation.fpgadataflow.simulation_build import BuildSimulation
        from finn.transformation.fpgadataflow.simulation_connected import (
            RunLayerParallelSimulation,
        )
        from qonnx.custom_op.registry import getCustomOp
        from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

        finn.xsi.ensure_available()  # builds finn's simulator binding for this Vivado once
        dcfg = _dataflow_build_config(cfg)
        clk_ns = _clk_ns(cfg)
        model = model.transform(BuildSimulation(cfg.fpga_part, clk_ns, dcfg.functional_simulation,
                                                performance_sim=False))
        model = model.transform(RunLayerParallelSimulation(cfg.fpga_part, clk_ns, dcfg))
        model = model.transform(ApplySimulatedFIFOSizes(dcfg))
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(GiveReadableTensorNames())
        model = _generate_ip(model, cfg)
        fifos = []
        for node in model.graph.node:
            if node.op_type.startswith("StreamingFIFO"):
                inst = getCustomOp(node)
                fifos.append({"name": node.name, "depth": int(inst.get_nodeattr("depth")),
                              "width_bits": int(inst.get_instream_width()),
                              "impl_style": inst.get_nodeattr("impl_style"),
                              "ram_style": inst.get_nodeattr("ram_style")})
        total_bits = sum(f["depth"] * f["width_bits"] for f in fifos)
        _write_report(cfg, "fifo_depths.json", {"strategy": dcfg.auto_fifo_strategy.value,
                                                "fifos": fifos,
                                                "total_fifo_kib": total_bits / 8 / 1024})
    return model


@build_step("stitch", ONNX_CHECKPOINT)
def step_stitch(model, cfg: BuildConfig):
    """Stitch all layer IPs into one Vivado IP block for the board's part and clock
    (finn's CreateStitchedIP); the Vivado project is copied to `OUT/stitched_ip/`."""
    with _vendor_step("stitch", cfg):
        from finn.transformation.fpgadataflow.create_stitched_ip import CreateStitchedIP

        model = model.transform(CreateStitchedIP(cfg.fpga_part, _clk_ns(cfg), run_synth=False))
        project = model.get_metadata_prop("vivado_stitch_proj")
        target = cfg.out_dir / "stitched_ip"
        shutil.copytree(project, target, dirs_exist_ok=True)
        _write_report(cfg, "stitch.json", {
            "stitched_ip_dir": str(target), "vivado_project": project,
            "vlnv": model.get_metadata_prop("vivado_stitch_vlnv"),
            "fpga_part": cfg.fpga_part, "clock_mhz": cfg.effective_clock_mhz})
    return model


@build_step("synth_ooc", ONNX_CHECKPOINT)
def step_synth_ooc(model, cfg: BuildConfig):
    """Synthesize, place and route the stitched IP out of context (finn's SynthOutOfContext).

    `report/synth_ooc.json` holds Vivado's resource counts, timing (WNS, fmax) and power, and
    the frame rate at fmax from finn's cycle estimate; Vivado's reports are copied to
    `report/synth_ooc/`. These are post-route figures of the accelerator alone, without the
    shell (DMA, interconnect).
    """
    with _vendor_step("synth_ooc", cfg):
        from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
        from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles
        from finn.transformation.fpgadataflow.synth_ooc import SynthOutOfContext
        from finn.util.vivado import parse_ooc_synth_results

        model = model.transform(SynthOutOfContext(cfg.fpga_part, _clk_ns(cfg)))
        project = Path(model.get_metadata_prop("vivado_stitch_proj"))
        results = parse_ooc_synth_results(project)
        if results is None:
            raise ToolchainError(f"synth_ooc: Vivado wrote no reports into {project}")
        max_cycles = int(model.transform(AnnotateCycles()).analysis(dataflow_performance)
                         ["max_cycles"])
        fmax = float(results.get("fmax_mhz", 0))
        results.update(clock_mhz=cfg.effective_clock_mhz, max_cycles=max_cycles,
                       throughput_fps_at_fmax=fmax * 1e6 / max_cycles,
                       throughput_fps_at_clock=cfg.effective_clock_mhz * 1e6 / max_cycles)
        copies = cfg.report_dir / "synth_ooc"
        copies.mkdir(parents=True, exist_ok=True)
        for report in project.glob("ooc_*"):
            shutil.copy(report, copies / report.name)
        _write_report(cfg, "synth_ooc.json", results)
    return model


@build_step("bitfile", ONNX_CHECKPOINT)
def step_bitfile(model, cfg: BuildConfig):
    """Build the board's bitfile: Vivado block design for Zynq, Vitis link for Alveo.

    Zynq: finn's ZynqBuild (DMAs, data width converters, one kernel per partition, block
    design with the PS) on the dataflow model, writing `bitfile/finn-accel.bit` and `.hwh`.
    Alveo: the chain of finn's step_prepare_synthesis and step_synthesize_bitfile (DMAs, XO
    kernels, VitisBuild), writing `bitfile/finn-accel-0.xclbin`. The layers left in software
    (`intermediate/partition_parent.onnx`) run in the driver. `report/bitfile.json` lists the
    files with the post-synthesis resources; Vivado's reports go to `report/`.
    """
    with _vendor_step("bitfile", cfg):
        bitfile_dir = cfg.out_dir / "bitfile"
        bitfile_dir.mkdir(parents=True, exist_ok=True)
        partitions = cfg.intermediate_dir / "kernel_partitions"
        partitions.mkdir(parents=True, exist_ok=True)
        if cfg.board_record.kind == "alveo":
            model, files = _alveo_bitfile(model, cfg, bitfile_dir, partitions)
        else:
            model, files = _zynq_bitfile(model, cfg, bitfile_dir, partitions)
        from finn.analysis.fpgadataflow.post_synth_res import post_synth_res

        resources = model.analysis(post_synth_res)
        _write_report(cfg, "bitfile.json", {
            "board": cfg.board, "shell_flow": cfg.board_record.shell_flow,
            "files": [str(f) for f in files], "clock_mhz": cfg.effective_clock_mhz,
            "post_synth_resources": resources})
        from flows.deploy_steps import add_bitfiles_to_package

        add_bitfiles_to_package(cfg, files)  # deploy/ gets the bitfile/hwh or xclbin
    return model


def _zynq_bitfile(model, cfg: BuildConfig, bitfile_dir: Path, partitions: Path):
    from finn.transformation.fpgadataflow.make_zynq_proj import ZynqBuild

    model = model.transform(ZynqBuild(cfg.board_record.finn_board, _clk_ns(cfg),
                                      partition_model_dir=str(partitions)))
    bit_name, hwh_name = BITFILE_NAMES["zynq"]
    files = [bitfile_dir / bit_name, bitfile_dir / hwh_name]
    shutil.copy(model.get_metadata_prop("bitfile"), files[0])
    shutil.copy(model.get_metadata_prop("hw_handoff"), files[1])
    project = Path(model.get_metadata_prop("vivado_pynq_proj"))
    shutil.copy(model.get_metadata_prop("vivado_synth_rpt"),
                cfg.report_dir / "post_synth_report.xml")
    timing = project / "finn_zynq_link.runs" / "impl_1" / "top_wrapper_timing_summary_routed.rpt"
    shutil.copy(timing, cfg.report_dir / "post_route_timing.rpt")
    return model, files


def _alveo_bitfile(model, cfg: BuildConfig, bitfile_dir: Path, partitions: Path):
    from finn.transformation.fpgadataflow.build_xo import BuildAllXOs
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )
    from finn.transformation.fpgadataflow.floorplan import Floorplan
    from finn.transformation.fpgadataflow.hlssynth_ip import HLSSynthIP
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.transformation.fpgadataflow.vitis_build import VitisBuild
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.transformation.general import GiveReadableTensorNames

    dcfg = _dataflow_build_config(cfg)
    clk_ns = _clk_ns(cfg)
    for transformation in (
        InsertIODMA(max_intfwidth=dcfg.vitis_iodma_intf_max_width),
        InsertDWC(),
        SpecializeLayers(cfg.fpga_part),
        PrepareIP(cfg.fpga_part, clk_ns),
        HLSSynthIP(),
        Floorplan(dcfg.vitis_floorplan_file),
        CreateDataflowPartition(str(partitions)),
    ):
        model = model.transform(transformation)
        model = model.transform(GiveUniqueNodeNamesRecursive())
        model = model.transform(GiveReadableTensorNames())
    model = model.transform(BuildAllXOs(cfg.fpga_part, clk_ns))
    model = model.transform(VitisBuild(dcfg))
    xclbins = json.loads(model.get_metadata_prop("bitfile"))
    if len(xclbins) != 1:
        raise ToolchainError(f"bitfile: expected one xclbin, Vitis built {len(xclbins)}")
    (target_name,) = BITFILE_NAMES["alveo"]
    files = [bitfile_dir / target_name]
    shutil.copy(next(iter(xclbins.values())), files[0])
    for device, report in json.loads(model.get_metadata_prop("vivado_synth_rpt")).items():
        if Path(report).exists():
            shutil.copy(report, cfg.report_dir / f"post_synth_report_{device}.xml")
    return model, files
