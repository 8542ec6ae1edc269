"""Board records: every board the issues name exists with a consistent record."""

import pytest

from flows.errors import ToolchainError
from hw.boards import BOARDS, get_board


@pytest.mark.parametrize("name", ["pynq-z2", "zcu104", "ultra96-v2", "kv260", "u250", "u280", "u55c"])
def test_board_record_complete(name):
    board = get_board(name)
    assert board.name == name
    assert board.kind in ("zynq", "alveo")
    assert board.shell_flow == {"zynq": "vivado_zynq", "alveo": "vitis_alveo"}[board.kind]
    assert (board.vitis_platform is not None) == (board.kind == "alveo")
    assert board.clock_mhz > 0 and abs(board.clock_period_ns * board.clock_mhz - 1000) < 1e-9
    r = board.resources
    assert r.lut > 0 and r.ff >= r.lut and r.bram18 > 0 and r.dsp > 0


def test_board_parts_agree_with_finn():
    """Our part names must be the ones FINN's own utilities use for the same board."""
    from finn.util.basic import part_map

    for board in BOARDS.values():
        assert part_map[board.finn_board] == board.fpga_part, board.name


def test_unknown_board_lists_choices():
    with pytest.raises(ToolchainError, match="unknown board 'zedboard'.*pynq-z2.*u55c"):
        get_board("zedboard")
