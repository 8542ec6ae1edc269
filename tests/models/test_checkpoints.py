"""models/checkpoints.py: integer-packed weights (what the shipped checkpoints store)."""

import io

import pytest
import torch

from flows.errors import InputFileError
from models.checkpoints import PACKED_KEY, pack_weights, read_checkpoint_file
from models.zoo import build_model


def _trained_like(name: str, bits: int):
    """A zoo model with non-trivial weights and calibrated activation scales."""
    from models.checkpoints import calibrate_untrained, full_state_dict

    torch.manual_seed(0)
    model = build_model(name, weight_bits=bits, act_bits=bits)
    calibrate_untrained(model, _frames(name, 16), passes=2)
    with full_state_dict():
        state = model.state_dict()
    return model, {"model": name, "weight_bits": bits, "act_bits": bits, "state_dict": state}


def _frames(name: str, n: int) -> torch.Tensor:
    from models.registry import get_model_spec

    return torch.randn((n, *get_model_spec(name).input_shape)) * 0.5


def _size(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


@pytest.mark.parametrize("name,bits", [("hakimi7", 8), ("vgg10-w4a4-32", 4), ("bacalhaunet", 6)])
def test_packed_checkpoint_is_smaller_and_computes_the_same(tmp_path, name, bits):
    model, ckpt = _trained_like(name, bits)
    packed = pack_weights(ckpt, model)
    assert packed[PACKED_KEY], "no layer packed"
    assert all(e["int"].dtype == torch.int8 for e in packed[PACKED_KEY].values())
    assert _size(packed) < 0.5 * _size(ckpt)
    path = tmp_path / "packed.pt"
    torch.save(packed, path)
    restored = read_checkpoint_file(path)
    assert PACKED_KEY not in restored and restored["weights_were_packed"]
    again = build_model(name, weight_bits=bits, act_bits=bits)
    from models.checkpoints import load_state
    load_state(again, restored["state_dict"], name, path)
    model.eval(), again.eval()
    x = _frames(name, 8)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
        for (key, a), b in zip(model.named_modules(), again.modules()):
            if hasattr(a, "quant_weight") and f"{key}.weight" in packed[PACKED_KEY]:
                assert torch.equal(a.quant_weight().int(), b.quant_weight().int()), key


def test_malformed_packed_entry_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"model": "hakimi7", "state_dict": {}, PACKED_KEY: {"w": {"int": torch.ones(2)}}},
               path)
    with pytest.raises(InputFileError, match="malformed 'packed_weights'"):
        read_checkpoint_file(path)


def test_every_zoo_model_ships_a_labelled_checkpoint():
    """Every zoo model has a shipped checkpoint that loads into it at its bits, says it was
    trained on synthetic data, and carries its measured test accuracy."""
    from models.checkpoints import load_checkpoint, shipped_checkpoint
    from models.registry import model_names

    for name in model_names():
        path = shipped_checkpoint(name)
        assert path is not None, f"{name}: no models/weights/{name}.pt"
        ckpt = read_checkpoint_file(path)
        assert ckpt["model"] == name and ckpt["dataset"]["synthetic"] is True, name
        assert 0.0 < ckpt["evaluation"]["accuracy"] <= 1.0, name
        assert len(ckpt["evaluation"]["per_snr"]) >= 10, name
        model = build_model(name, weight_bits=ckpt["weight_bits"], act_bits=ckpt["act_bits"])
        load_checkpoint(model, path, name, ckpt["weight_bits"], ckpt["act_bits"])
