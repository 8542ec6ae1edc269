"""The RadioML file layouts: class order, SNR grid, shapes and row order.

One place defines them; readers, the synthetic generator and the models import from here.
Facts from the RadioML 2018.01A and 2016.10a releases (see the project notes on data).
"""

from __future__ import annotations

import numpy as np

# RadioML 2018.01A (GOLD_XYZ_OSC.0001_1024.hdf5). The classes.txt shipped with the data is
# known to be wrong; this is the column order of `Y` in the real file.
RML2018_CLASSES: tuple[str, ...] = (
    "OOK", "4ASK", "8ASK", "BPSK", "QPSK", "8PSK", "16PSK", "32PSK", "16APSK", "32APSK",
    "64APSK", "128APSK", "16QAM", "32QAM", "64QAM", "128QAM", "256QAM", "AM-SSB-WC",
    "AM-SSB-SC", "AM-DSB-WC", "AM-DSB-SC", "FM", "GMSK", "OQPSK",
)
RML2018_SNRS_DB: tuple[int, ...] = tuple(range(-20, 31, 2))  # 26 levels
RML2018_FRAMES_PER_CELL = 4096  # frames per (class, SNR) cell in the real file
RML2018_FRAME_LEN = 1024  # complex samples per frame
RML2018_DATASETS = ("X", "Y", "Z")  # X (N, 1024, 2) float32, Y (N, 24) one-hot, Z (N, 1) SNR dB
RML2018_SPLIT_SEED = 2018
RML2018_TEST_FRACTION = 0.1  # ceil(0.1 * 4096) = 410 test frames per cell

# RadioML 2016.10a (RML2016.10a_dict.pkl): dict (modulation, snr) -> (1000, 2, 128) float32.
RML2016_CLASSES: tuple[str, ...] = (
    "8PSK", "AM-DSB", "AM-SSB", "BPSK", "CPFSK", "GFSK", "PAM4", "QAM16", "QAM64", "QPSK", "WBFM",
)
RML2016_SNRS_DB: tuple[int, ...] = tuple(range(-20, 19, 2))  # 20 levels
RML2016_FRAMES_PER_CELL = 1000
RML2016_FRAME_LEN = 128
RML2016_SPLIT_SEED = 2016


def rml2018_row(class_index: int, snr_index: int, k: int,
                frames_per_cell: int = RML2018_FRAMES_PER_CELL,
                n_snrs: int = len(RML2018_SNRS_DB)) -> int:
    """Row of frame `k` of cell (class, SNR) in a file ordered class-then-SNR ascending."""
    return (class_index * n_snrs + snr_index) * frames_per_cell + k


def rml2018_cell_rows(class_index: int, snr_index: int,
                      frames_per_cell: int = RML2018_FRAMES_PER_CELL,
                      n_snrs: int = len(RML2018_SNRS_DB)) -> np.ndarray:
    """All rows of one (class, SNR) cell."""
    start = rml2018_row(class_index, snr_index, 0, frames_per_cell, n_snrs)
    return np.arange(start, start + frames_per_cell)
