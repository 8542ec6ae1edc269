"""The deploy package: everything to copy onto the board, written from the final graph.

    DIR/deploy/
      io.json          interface of the accelerator (`io_description`), SHA-256 of every file
      dataflow.onnx    the final dataflow graph (what `--backend emulate` executes)
      testset.npz      test-split frames (the build's verification frames) with labels, SNRs
                       and the golden model's classes
      hw/driver/, hw/emulate.py, flows/{errors,fileio,plots}.py   the driver (numpy only)
      finn-accel.bit + .hwh (Zynq) or finn-accel-0.xclbin (Alveo), once the vendor steps ran
      README.md        the commands to run on the board

`io_description` reads the accelerator's input and output from its first and last HW layer
(normal, folded and packed shapes, datatypes), the software part in front of it from the
parent graph (`partition_parent.onnx`), and describes the input quantizer (scale, zero point,
integer and real range), wherever it sits. Host-side: needs qonnx/finn.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from flows.errors import ToolchainError
from flows.fileio import atomic_path, atomic_write_text
from hw.driver.package import FORMAT_VERSION, IO_JSON, sha256
from hw.driver.packing import StreamType, packed_bytes

__all__ = ["DEPLOY_DIRNAME", "add_bitfiles", "describe_quantizer", "io_description",
           "write_deploy_package"]

DEPLOY_DIRNAME = "deploy"
GRAPH_NAME = "dataflow.onnx"
TESTSET_NAME = "testset.npz"
_SDP = "StreamingDataflowPartition"
_REPO = Path(__file__).resolve().parents[1]
# What the driver imports, copied into the package (all numpy-only on the board).
_DRIVER_FILES = ("hw/driver/__init__.py", "hw/driver/__main__.py", "hw/driver/accelerator.py",
                 "hw/driver/backends.py", "hw/driver/evaluate.py", "hw/driver/package.py",
                 "hw/driver/packing.py", "hw/emulate.py", "flows/errors.py", "flows/fileio.py",
                 "flows/plots.py")
_PACKAGE_INITS = {"hw/__init__.py": '"""Board-side copy of the amc-fpga driver."""\n',
                  "flows/__init__.py": '"""Board-side copy of the modules the driver uses."""\n'}


def describe_quantizer(thresholds: np.ndarray, out_bias: float, out_datatype: str,
                       where: str, node: str) -> dict:
    """Scale, zero point and ranges of a uniform quantizer given as thresholds: the integer
    q = count(x >= t) + out_bias equals clip(round(x / scale) + zero_point) when the thresholds
    sit at scale * (k + out_bias + 0.5 - zero_point); `max_threshold_error` says how far the
    thresholds are from that (in units of scale; 0 for an exact uniform quantizer)."""
    t = np.sort(np.asarray(thresholds, dtype=np.float64).reshape(len(thresholds), -1), axis=1)
    steps = t.shape[1]
    scale = float((t[:, -1] - t[:, 0]).mean() / max(steps - 1, 1))
    zero_point = float(np.round(out_bias + 0.5 - t[:, 0].mean() / scale)) if scale else 0.0
    k = np.arange(steps)
    ideal = scale * (k + out_bias + 0.5 - zero_point)
    q_lo, q_hi = int(out_bias), int(out_bias + steps)
    return {"where": where, "node": node, "datatype": out_datatype,
            "bits": StreamType.parse(out_datatype).bits, "scale": scale,
            "zero_point": zero_point, "range_int": [q_lo, q_hi],
            "range": [scale * (q_lo - zero_point), scale * (q_hi - zero_point)],
            "max_threshold_error": float(np.abs(t - ideal).max() / scale) if scale else 0.0,
            "per_channel": bool(t.shape[0] > 1)}


def _stream(inst, tensor: str, datatype, normal, folded) -> dict:
    stype = StreamType.parse(datatype.name)
    folded = tuple(int(v) for v in folded)
    return {"tensor": tensor, "datatype": datatype.name,
            "normal_shape": [int(v) for v in normal], "folded_shape": list(folded),
            "packed_shape": [*folded[:-1], packed_bytes(folded[-1], stype)],
            "stream_width_bits": int(folded[-1] * stype.bits)}


class DeployUnsupported(ToolchainError):
    """The design needs something the board driver does not do yet: no package is written."""


class HostPartUnsupported(DeployUnsupported):
    """The graph keeps software the board driver cannot run (a model's host part)."""


def _check_no_runtime_weights(dataflow) -> None:
    """Layers whose weights the driver would have to write at start-up (URAM weights)."""
    from qonnx.custom_op.registry import getCustomOp

    runtime = [n.name for n in dataflow.graph.node
               if "runtime_writeable_weights" in getCustomOp(n).get_nodeattr_types()
               and getCustomOp(n).get_nodeattr("runtime_writeable_weights")]
    if runtime:
        raise DeployUnsupported(
            f"the weights of {', '.join(runtime)} are in UltraRAM, which the bitstream cannot "
            "initialise: the driver would have to write them through each layer's AXI-lite "
            "port at start-up (FINN's runtime-writeable weights), which it does not do yet")


def _software_ops(parent, dataflow) -> tuple[list[dict], dict | None]:
    """The parent graph's nodes in front of the dataflow partition as driver ops, and the
    input quantizer among them (None if it is in hardware)."""
    from qonnx.custom_op.registry import getCustomOp

    ops, quantizer = [], None
    seen_partition = False
    for node in parent.graph.node:
        if node.op_type == _SDP:
            seen_partition = True
            continue
        if seen_partition:
            raise HostPartUnsupported(f"{node.name} ({node.op_type}) runs in software after the "
                                      "accelerator; the driver supports software only in front "
                                      "of it")
        if node.op_type == "Transpose":
            perm = [a.ints for a in node.attribute if a.name == "perm"][0]
            ops.append({"op": "Transpose", "perm": [int(p) for p in perm]})
        elif node.op_type == "Reshape":
            ops.append({"op": "Reshape",
                        "shape": [int(v) for v in parent.get_tensor_shape(node.output[0])]})
        elif node.op_type == "MultiThreshold":
            inst = getCustomOp(node)
            thresholds = parent.get_initializer(node.input[1])
            op = {"op": "MultiThreshold", "thresholds": thresholds.tolist(),
                  "out_scale": float(inst.get_nodeattr("out_scale")),
                  "out_bias": float(inst.get_nodeattr("out_bias")),
                  "data_layout": inst.get_nodeattr("data_layout")}
            ops.append(op)
            quantizer = describe_quantizer(thresholds, op["out_bias"],
                                           parent.get_tensor_datatype(node.output[0]).name,
                                           "driver", node.name)
        else:
            raise HostPartUnsupported(f"{node.name} ({node.op_type}) stays in software in front "
                                      "of the accelerator; the driver implements only "
                                      "Transpose, Reshape and MultiThreshold there")
    return ops, quantizer


def io_description(dataflow, parent, cfg) -> dict:
    """io.json's content (without files and hashes) for the dataflow model `dataflow` and its
    parent graph `parent` of build `cfg`."""
    from qonnx.custom_op.registry import getCustomOp

    from flows.rml_formats import RML2016_CLASSES, RML2018_CLASSES

    in_name, out_name = dataflow.graph.input[0].name, dataflow.graph.output[0].name
    first_node, last_node = dataflow.find_consumer(in_name), dataflow.find_producer(out_name)
    first, last = getCustomOp(first_node), getCustomOp(last_node)
    software, quantizer = _software_ops(parent, dataflow)
    if quantizer is None and first_node.op_type.startswith("Thresholding") \
            and not first.get_input_datatype(0).is_integer():
        quantizer = describe_quantizer(dataflow.get_initializer(first_node.input[1]),
                                       first.get_nodeattr("ActVal"),
                                       first.get_output_datatype(0).name, "hardware",
                                       first_node.name)
    spec = cfg.model_spec
    output = _stream(last, out_name, last.get_output_datatype(0),
                     last.get_normal_output_shape(), last.get_folded_output_shape())
    if last_node.op_type.startswith("LabelSelect"):
        output.update(kind="class_index", k=int(last.get_nodeattr("K")))
    else:
        output["kind"] = "scores"
    estimates_path = cfg.report_dir / "estimates.json"
    estimates = json.loads(estimates_path.read_text()) if estimates_path.exists() else {}
    from models.checkpoints import weights_source

    return {
        "format": FORMAT_VERSION,
        "model": cfg.model, "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits,
        "weights": weights_source(cfg),
        "board": cfg.board, "board_kind": cfg.board_record.kind,
        "clock_mhz": cfg.effective_clock_mhz, "dataset": spec.dataset,
        "class_names": list(RML2018_CLASSES if spec.dataset == "rml2018" else RML2016_CLASSES)
        [: spec.n_classes],
        "frame_shape": [2, int(spec.input_shape[-1])],
        "model_input_shape": [int(v) for v in spec.input_shape],
        # what the frames are reshaped to: the graph's declared input (batch 1), e.g.
        # (1, 2, 1, L) once a QuantConv1d model is lifted to (1, k) convolutions
        "graph_input_shape": [int(v) for v in parent.get_tensor_shape(
            parent.graph.input[0].name)],
        "software": software,
        "input_quantizer": quantizer,
        "input": _stream(first, in_name, first.get_input_datatype(0),
                         first.get_normal_input_shape(), first.get_folded_input_shape()),
        "output": output,
        "estimate": {k: estimates.get(k) for k in ("throughput_fps", "latency_us",
                                                    "clock_mhz", "fpga_part")},
    }


def _readme(io: dict) -> str:
    kind = io["board_kind"]
    backend = "xrt" if kind == "alveo" else "pynq"
    bitfile = "finn-accel-0.xclbin" if kind == "alveo" else "finn-accel.bit and finn-accel.hwh"
    q = io.get("input_quantizer") or {}
    quant = (f"Input quantizer ({q.get('where')}): {q.get('datatype')}, scale {q.get('scale'):.6g},"
             f" zero point {q.get('zero_point'):g}, real range {q.get('range')}."
             if q else "No input quantizer.")
    return f"""# Deploy package: {io['model']} (w{io['weight_bits']}a{io['act_bits']}) for {io['board']}

Copy this directory onto the board, then, inside it, with the board's own Python
(numpy 1.x, pynq; on PYNQ images run as root, e.g. `sudo -E python3`):

    python3 -m hw.driver --deploy . --data testset.npz
    python3 -m hw.driver --deploy . --data testset.npz --batch 1024 --snr-min 0

The first runs the package's test set through the accelerator and reports accuracy (overall,
per SNR, confusion matrix), throughput and latency, and how many classes equal the golden
(Brevitas) model's, in `results_{backend}/` (JSON and PNG). The second takes larger batches and
only frames of SNR >= 0 dB. `--data` takes any .npz with x (N, {io['frame_shape'][0]},
{io['frame_shape'][1]}) float32, y and snr; on the host also a RadioML file (published test
split). `--backend emulate` runs the same packed bytes through the exact dataflow graph
(`dataflow.onnx`, needs the `onnx` package) on any machine.

Bitfile: {bitfile} ({'present' if io['files'].get('bitfile') or io['files'].get('xclbin') else 'not yet built: run the vendor-tool steps, then the build copies it here'}).
Input: {io['input']['datatype']} {io['input']['normal_shape']}, folded {io['input']['folded_shape']};
output: {io['output']['datatype']} {io['output']['normal_shape']} ({io['output'].get('kind')}).
{quant}
`io.json` describes the interface; the driver refuses files whose SHA-256 differs from it.
"""


def write_deploy_package(dataflow, parent, cfg, out_dir: Path | None = None) -> Path:
    """Write DIR/deploy/ for the dataflow model `dataflow` (the final HW graph) and its parent
    graph; returns the package directory. Bitfiles already in DIR/bitfile/ are included."""
    out = Path(out_dir) if out_dir is not None else cfg.out_dir / DEPLOY_DIRNAME
    _check_no_runtime_weights(dataflow)
    io = io_description(dataflow, parent, cfg)  # raises before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / GRAPH_NAME) as tmp:
        dataflow.save(str(tmp))
    _write_testset(cfg, out / TESTSET_NAME)
    for rel in _DRIVER_FILES:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_REPO / rel, target)
    for rel, text in _PACKAGE_INITS.items():
        atomic_write_text(out / rel, text)
    io["files"] = {"dataflow_graph": GRAPH_NAME, "testset": TESTSET_NAME, "bitfile": None,
                   "hwh": None, "xclbin": None}
    _finish(out, io)
    bitfiles = [p for p in (cfg.out_dir / "bitfile").glob("*")
                if p.suffix in (".bit", ".hwh", ".xclbin")] if (cfg.out_dir / "bitfile").is_dir() else []
    if bitfiles:
        add_bitfiles(out, bitfiles)
    return out


def add_bitfiles(deploy_dir, files) -> None:
    """Copy bitfile + hwh (Zynq) or xclbin (Alveo) into the package and record them in io.json.

    Called by the vendor `bitfile` step once it has written them (see the report)."""
    deploy_dir = Path(deploy_dir)
    io_path = deploy_dir / IO_JSON
    if not io_path.exists():
        raise ToolchainError(f"{deploy_dir}: no deploy package to add the bitfile to; run the "
                             "deploy step first (python build.py ... --from deploy)")
    io = json.loads(io_path.read_text())
    roles = {".bit": "bitfile", ".hwh": "hwh", ".xclbin": "xclbin"}
    for f in map(Path, files):
        if f.suffix not in roles:
            raise ToolchainError(f"{f}: not a bitfile, hwh or xclbin")
        shutil.copyfile(f, deploy_dir / f.name)
        io["files"][roles[f.suffix]] = f.name
    _finish(deploy_dir, io)


def _finish(out: Path, io: dict) -> None:
    io["sha256"] = {name: sha256(out / name) for name in io["files"].values() if name}
    atomic_write_text(out / "README.md", _readme(io))
    atomic_write_text(out / IO_JSON, json.dumps(io, indent=1) + "\n")


def _write_testset(cfg, path: Path) -> None:
    frames = np.load(cfg.data_dir / "verify_frames.npz")
    golden = np.load(cfg.report_dir / "golden_outputs.npz")["logits"]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=frames["x"].astype(np.float32), y=frames["y"], snr=frames["snr"],
                     rows=frames["rows"], golden_class=golden.argmax(axis=1),
                     golden_logits=golden, split=np.array("test"))
