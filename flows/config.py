"""The build configuration: one typed record, saved with every build.

`build.py` fills it from the command line; `OUT/build_config.json` holds the copy a build ran
with, and `BuildConfig.load` reads such a file back (unknown keys are an error, so a misspelt
option never vanishes silently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mashumaro import DataClassDictMixin
from mashumaro.config import BaseConfig
from mashumaro.exceptions import ExtraKeysError, InvalidFieldValue, MissingField

from flows.errors import ToolchainError


@dataclass
class BuildConfig(DataClassDictMixin):
    model: str  # zoo model name (models.registry); with `onnx`, the file's stem
    board: str  # board name (hw.boards)
    out_dir: Path  # where every artifact of this build goes
    bits: int | None = None  # weight and activation bit width override; None: model default
    weights: Path | None = None  # checkpoint to load; None: the model's shipped checkpoint
    data: Path | None = None  # RadioML-layout file for verification; None: synthetic frames
    onnx: Path | None = None  # a user's QONNX file built instead of a zoo model (`--onnx`)
    verify_frames: int = 24  # frames the golden model and every stage are compared on
    seed: int = 0  # seed for synthetic data and anything else random in the build
    from_step: str | None = None  # resume: first step to run (earlier checkpoints are reused)
    until_step: str | None = None  # stop after this step
    target_fps: float | None = None  # throughput the folding aims at; None: the board's maximum
    clock_mhz: float | None = None  # accelerator clock; None: the board's default
    folding: Path | None = None  # a folding config (JSON, FINN's format) to apply as it is
    max_utilisation: float = 0.9  # share of each board resource the estimate may use (the
    # rest is left to the shell: DMA, interconnect)
    verify_atol: float = 1e-4  # largest |logit difference| a stage may show against the golden
    verify_off_fraction: float = 0.5  # share of frames whose logits may exceed verify_atol
    # (a value on a quantization step boundary rounded the other way); classes must all agree
    verify_rtol: float = 0.05  # every frame's logits within verify_atol + verify_rtol x its
    # largest |golden logit|, or the median frame's if larger (measured boundary flips: <= 0.4 %
    # at 8 bits, 1.5 % at 4 bits)
    mvau_wwidth_max: int = 36  # SetFolding's cap on SIMD x weight bits per MVAU PE (finn's)

    class Config(BaseConfig):
        forbid_extra_keys = True

    # Derived values: never stored, always computed from the fields above.
    @property
    def board_record(self):
        from hw.boards import get_board

        return get_board(self.board)

    @property
    def fpga_part(self) -> str:
        return self.board_record.fpga_part

    @property
    def model_spec(self):
        if self.onnx is not None:
            from flows.onnx_input import onnx_model_spec

            return onnx_model_spec(self.onnx)
        from models.registry import get_model_spec

        return get_model_spec(self.model)

    @property
    def weight_bits(self) -> int:
        return self.bits if self.bits is not None else self.model_spec.default_bits

    @property
    def act_bits(self) -> int:
        return self.weight_bits

    @property
    def effective_clock_mhz(self) -> float:
        return self.clock_mhz if self.clock_mhz is not None else self.board_record.clock_mhz

    @property
    def effective_target_fps(self) -> float:
        """The target, or the board's realistic maximum: one input sample per clock cycle,
        which is what the input end of a 1D dataflow pipeline (padding + sliding window over
        the frame) sustains without widening its input stream."""
        if self.target_fps is not None:
            return self.target_fps
        return self.effective_clock_mhz * 1e6 / self.model_spec.input_shape[-1]

    @property
    def intermediate_dir(self) -> Path:
        return self.out_dir / "intermediate"

    @property
    def report_dir(self) -> Path:
        return self.out_dir / "report"

    @property
    def data_dir(self) -> Path:
        return self.out_dir / "data"

    def save(self, path: Path) -> None:
        from flows.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    @classmethod
    def load(cls, path: Path) -> "BuildConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ToolchainError(f"{path}: cannot read the build configuration ({exc}); "
                                 "expected a JSON file written by build.py.") from None
        try:
            return cls.from_dict(raw)
        except (ExtraKeysError, InvalidFieldValue, MissingField) as exc:
            raise ToolchainError(f"{path}: invalid build configuration: {exc}. Fields are: "
                                 f"{', '.join(cls.__dataclass_fields__)}.") from None
