"""Build a zoo model and load its weights from a checkpoint, with clear errors on mismatch.

Checkpoints the toolchain writes are dicts with `model`, `weight_bits`, `act_bits` and
`state_dict`; a bare state dict of the same model is accepted too. Shipped checkpoints live in
`models/weights/<name>.pt`.
"""

from __future__ import annotations

from pathlib import Path

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


def load_checkpoint(model, path: Path, model_name: str, weight_bits: int, act_bits: int) -> None:
    import pickle

    import torch

    if not path.is_file():
        raise InputFileError(path, "no such checkpoint file",
                             fix="Pass --weights with an existing .pt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise InputFileError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__})",
                             expected="a file saved with torch.save") from None
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        for key, want in (("model", model_name), ("weight_bits", weight_bits),
                          ("act_bits", act_bits)):
            if key in ckpt and ckpt[key] != want:
                raise InputFileError(path, f"checkpoint is for {key}={ckpt[key]!r}",
                                     expected=f"{key}={want!r}",
                                     fix="Pass the matching --model/--bits, or another --weights")
        state = ckpt["state_dict"]
    elif isinstance(ckpt, dict):
        state = ckpt
    else:
        raise InputFileError(path, f"holds a {type(ckpt).__name__}",
                             expected="a state dict or a dict with a 'state_dict' entry")
    own = model.state_dict()
    for key, value in state.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise InputFileError(path, f"key {key!r} has shape {tuple(value.shape)}",
                                 expected=f"shape {tuple(own[key].shape)} for {model_name}")
    try:
        # strict=False: Brevitas loads the learned scales its fresh quantizers do not list yet;
        # what is still missing or unexpected after that is reported below.
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ToolchainError(f"{path}: cannot load into {model_name}: {exc}") from None
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if missing or unexpected:
        first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise InputFileError(path, f"does not match model {model_name}: {first} "
                             f"({len(missing)} missing, {len(unexpected)} unexpected)",
                             expected=f"the state dict of {model_name}")


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
