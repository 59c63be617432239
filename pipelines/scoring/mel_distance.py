"""How close synthesized speech is to real speech: mel-cepstral distance under DTW.

    log-mel power (T, M) --x 1/2: log amplitude--> cepstra c_k = 1/M sum_m L_m
        cos(pi k (2m + 1) / 2M) (the real cepstrum of the mel spectrum read as half of
        an even period), k = 1..13 (c_0, the loudness, left out) --> DTW alignment
        with a real recording's --> MCD = 10 / ln 10 * sqrt(2 * sum_k (c_k - c'_k)^2),
        in dB, averaged over the aligned frame pairs

The formula is Kubichek's (1993), as TTS papers report it; the cepstra here come from
the mel filterbank of the recipe's features (MFCC-style) rather than SPTK's all-pass
mel-cepstrum of order 24+, so figures compare across this project's runs (and with the
distance between two real takes, which ``rayseq eval`` reports beside them), not with
papers'. DTW (steps (1,1), (1,0), (0,1)) lets a word spoken faster or slower be compared
frame by frame; the distance is the mean over the path's frame pairs.
"""

from __future__ import annotations

import math

import numpy as np

CEPSTRA = 13
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)


def mel_cepstra(log_mel: np.ndarray, count: int = CEPSTRA) -> np.ndarray:
    """``(T, M)`` natural-log mel power -> ``(T, count)`` cepstra ``c_1..c_count``."""
    bands = log_mel.shape[1]
    n = np.arange(bands)
    k = np.arange(1, count + 1)[:, None]
    dct = np.cos(np.pi * k * (2 * n + 1) / (2 * bands)) / bands
    return 0.5 * np.asarray(log_mel, dtype=np.float64) @ dct.T


def dtw_path_mean(cost: np.ndarray) -> float:
    """The mean cost along the cheapest monotone path through ``cost (A, B)`` from
    ``(0, 0)`` to ``(A-1, B-1)``, steps (1,1), (1,0), (0,1); the path minimises the
    summed cost, its length breaking ties to the shorter."""
    a, b = cost.shape
    total = np.full((a + 1, b + 1), np.inf)
    steps = np.zeros((a + 1, b + 1), dtype=np.int64)
    total[0, 0] = 0.0
    for i in range(1, a + 1):
        row, row_cost = total[i], cost[i - 1]
        above, diagonal = total[i - 1, 1:], total[i - 1, :-1]
        above_steps, diagonal_steps = steps[i - 1, 1:], steps[i - 1, :-1]
        for j in range(1, b + 1):  # the left neighbour depends on this row: a loop
            best, length = diagonal[j - 1], diagonal_steps[j - 1]
            if above[j - 1] < best:
                best, length = above[j - 1], above_steps[j - 1]
            if row[j - 1] < best:
                best, length = row[j - 1], steps[i, j - 1]
            row[j] = best + row_cost[j - 1]
            steps[i, j] = length + 1
    return float(total[a, b] / steps[a, b])


def mcd(log_mel: np.ndarray, reference: np.ndarray) -> float:
    """Mel-cepstral distance in dB between two log-mel spectrograms, DTW-aligned."""
    x, y = mel_cepstra(log_mel), mel_cepstra(reference)
    cost = MCD_SCALE * np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    return dtw_path_mean(cost)
