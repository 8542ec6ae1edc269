"""Build a zoo model and load its weights from a checkpoint, with clear errors on mismatch.

Checkpoints the toolchain writes are dicts with `model`, `weight_bits`, `act_bits` and
`state_dict`; a bare state dict of the same model is accepted too, and so are the published
layouts of `models.published` (the challenge's VGG10, the winner's BacalhauNet). Shipped
checkpoints live in `models/weights/<name>.pt`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from flows.errors import InputFileError, ToolchainError

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def shipped_checkpoint(model_name: str) -> Path | None:
    path = SHIPPED_DIR / f"{model_name}.pt"
    return path if path.is_file() else None


def weights_source(cfg) -> str:
    """Where the weights of this build come from, in words for the report."""
    if cfg.weights is not None:
        return str(cfg.weights)
    shipped = shipped_checkpoint(cfg.model)
    if shipped is not None:
        return f"shipped checkpoint {shipped.name}"
    return (f"untrained (random init, seed {cfg.seed}, calibrated on the verification frames): "
            f"no shipped checkpoint for {cfg.model} yet")


def instantiate(cfg, weights: Path | None = None):
    """The zoo model of `cfg` at its bit widths, weights loaded, in eval mode."""
    import torch

    from models.zoo import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, weight_bits=cfg.weight_bits, act_bits=cfg.act_bits)
    path = Path(weights) if weights is not None else shipped_checkpoint(cfg.model)
    if path is not None:
        load_checkpoint(model, path, cfg.model, cfg.weight_bits, cfg.act_bits)
    return model.eval()


def is_untrained(cfg) -> bool:
    return cfg.weights is None and shipped_checkpoint(cfg.model) is None


def read_checkpoint_file(path: Path):
    """What `torch.load` reads from `path` (tensors and plain data only), or a clear error."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such checkpoint file" if not path.exists()
                             else "is not a file", expected="a .pt/.pth file saved with torch.save",
                             fix="Pass an existing checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise InputFileError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__})",
                             expected="a file saved with torch.save") from None
    if isinstance(ckpt, dict) and PACKED_KEY in ckpt:
        ckpt = unpack_weights(ckpt, path)
    return ckpt


# --- integer-packed weights (shipped checkpoints) ---------------------------------------------

PACKED_KEY = "packed_weights"  # checkpoint entry: weight name -> {"int": tensor, "scale": tensor}


def pack_weights(ckpt: dict, model) -> dict:
    """`ckpt` with every quantized layer's float weight replaced by its integer weight (int8 up
    to 8 bits) and scale, as Brevitas quantizes it in `model` (which holds ckpt's weights):
    a quarter of the size, and the same model once unpacked.

    The float weight is lost, but not what the model computes: unpacked, the weight is
    int x scale, which Brevitas quantizes back to the same integers (its scale is either a
    stored parameter or a statistic of the weight, unchanged by the round trip). This is
    checked here on every layer: a layer whose integers would change is left in float.
    """
    import copy

    import torch

    state = dict(ckpt["state_dict"])
    packed = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not hasattr(module, "quant_weight") or f"{name}.weight" not in state:
                continue
            quant = module.quant_weight()
            if quant.zero_point is not None and torch.any(quant.zero_point != 0):
                continue
            bits = int(quant.bit_width)
            ints = quant.int().to(torch.int8 if bits <= 8 else
                                  torch.int16 if bits <= 16 else torch.int32)
            packed[f"{name}.weight"] = {"int": ints, "scale": quant.scale.detach().float(),
                                        "bits": bits}
    trial = copy.deepcopy(model)
    unpacked = _unpacked_state(state, packed)
    trial.load_state_dict(unpacked, strict=False)
    with torch.no_grad():
        for name, module in trial.named_modules():
            key = f"{name}.weight"
            if key in packed and not torch.equal(module.quant_weight().int().to(torch.int64),
                                                 packed[key]["int"].to(torch.int64)):
                del packed[key]  # not reproduced exactly: keep this one in float
    for key in packed:
        del state[key]
    return {**ckpt, "state_dict": state, PACKED_KEY: packed}


def _unpacked_state(state: dict, packed: dict) -> dict:
    out = dict(state)
    for key, entry in packed.items():
        out[key] = entry["int"].float() * entry["scale"]
    return out


def unpack_weights(ckpt: dict, path) -> dict:
    """The checkpoint with its packed weights back in float (int x scale) in its state dict."""
    packed = ckpt[PACKED_KEY]
    if not isinstance(packed, dict) or not isinstance(ckpt.get("state_dict"), dict) or not all(
            isinstance(e, dict) and {"int", "scale"} <= set(e) for e in packed.values()):
        raise InputFileError(path, f"has a malformed {PACKED_KEY!r} entry",
                             expected="weight name -> {'int': tensor, 'scale': tensor}, as "
                                      "models.checkpoints.pack_weights writes it")
    state = _unpacked_state(ckpt["state_dict"], packed)
    out = {k: v for k, v in ckpt.items() if k != PACKED_KEY}
    out["state_dict"] = state
    out["weights_were_packed"] = sorted(packed)
    return out


def split_checkpoint(ckpt, path: Path) -> tuple[dict, dict]:
    """(header, state dict) of a toolchain checkpoint; a bare state dict has an empty header."""
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return ckpt, ckpt["state_dict"]
    if isinstance(ckpt, dict):
        return {}, ckpt
    raise InputFileError(path, f"holds a {type(ckpt).__name__}",
                         expected="a state dict or a dict with a 'state_dict' entry")


@contextlib.contextmanager
def full_state_dict() -> Iterator[None]:
    """Brevitas drops an activation quantizer's scale from `state_dict()` until its first
    training step; inside this block it keeps it, so every checkpoint lists every scale,
    trained or not."""
    import brevitas.config as bconfig

    old = bconfig._FULL_STATE_DICT
    bconfig._FULL_STATE_DICT = True
    try:
        yield
    finally:
        bconfig._FULL_STATE_DICT = old


def load_state(model, state, model_name: str, origin) -> None:
    """Load `state` into `model` with key and shape checks; the first offending key is named.

    A published checkpoint layout (`models.published`: the challenge's VGG10, the winner's
    BacalhauNet) is recognised by its keys and loaded through its explicit, checked mapping.
    Any other Conv1d weights (C, G, k) become the (C, G, 1, k) of the zoo's (1, k) convs."""
    import torch

    from models.layers import from_conv1d_state_dict
    from models.published import detect_layout, load_published

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise InputFileError(origin, "is not a state dict (name -> tensor)",
                             expected=f"the state dict of {model_name}")
    layout = detect_layout(state)
    if layout is not None:
        load_published(model, state, model_name, origin, layout)
        return
    state = from_conv1d_state_dict(state)
    with full_state_dict():
        own = model.state_dict()
        for key, value in state.items():
            if key in own and tuple(value.shape) != tuple(own[key].shape):
                raise InputFileError(origin, f"key {key!r} has shape {tuple(value.shape)}",
                                     expected=f"shape {tuple(own[key].shape)} for {model_name}")
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ToolchainError(f"{origin}: cannot load into {model_name}: {exc}") from None
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if missing or unexpected:
        first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise InputFileError(origin, f"does not match model {model_name}: {first} "
                             f"({len(missing)} missing, {len(unexpected)} unexpected)",
                             expected=f"the state dict of {model_name}",
                             fix="Pass the --model the weights were trained for")


def check_header(path, header: dict, *, model: str | None = None, weight_bits=None,
                 act_bits=None, fix: str = "Pass the matching --model/--bits, or another "
                                          "--weights") -> None:
    """Raise if the checkpoint header names another model or other bit widths than asked
    (None: not checked; a key the header lacks is not checked either)."""
    for key, want in (("model", model), ("weight_bits", weight_bits), ("act_bits", act_bits)):
        if want is not None and key in header and header[key] != want:
            raise InputFileError(path, f"is a checkpoint for {key}={header[key]!r}",
                                 expected=f"{key}={want!r}", fix=fix)


def load_checkpoint(model, path: Path, model_name: str, weight_bits: int, act_bits: int) -> None:
    """Load a toolchain checkpoint or bare state dict into `model`, checking that a
    checkpoint's header names this model and these bit widths."""
    header, state = split_checkpoint(read_checkpoint_file(path), path)
    check_header(path, header, model=model_name, weight_bits=weight_bits, act_bits=act_bits)
    load_state(model, state, model_name, path)


def calibrate_untrained(model, x, passes: int = 8) -> None:
    """Give a randomly initialised model realistic BatchNorm statistics and activation scales.

    Brevitas learns activation scales from runtime statistics during the first training
    passes; an untrained model would otherwise run with placeholder scales. Runs `passes`
    forward passes in train mode without gradients on the frames `x`, leaves eval mode.
    """
    import torch

    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(x)
    model.eval()
