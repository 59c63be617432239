"""Log-mel spectrograms drawn side by side as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

import io

import numpy as np


def spectrogram_png(panels: list[tuple[str, np.ndarray]], *, hop_seconds: float) -> bytes:
    """One panel per ``(title, log_mel (T, n_mels))``, time in seconds, mel band up, all
    on one colour scale (so loudness compares across panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("no spectrogram to draw")
    low = min(float(np.min(frames)) for _, frames in panels)
    high = max(float(np.max(frames)) for _, frames in panels)
    low = max(low, high - 16.0)  # 16 nats (~70 dB) below the loudest: quieter is background
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), dpi=100, squeeze=False)
    for ax, (title, frames) in zip(axes[0], panels):
        frames = np.asarray(frames)
        image = ax.imshow(frames.T, origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high,
                          extent=(0, len(frames) * hop_seconds, 0, frames.shape[1]))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("seconds")
    axes[0][0].set_ylabel("mel band")
    fig.colorbar(image, ax=list(axes[0]), label="log mel power", shrink=0.85)
    out = io.BytesIO()
    fig.savefig(out, format="png", bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()
