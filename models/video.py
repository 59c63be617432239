"""Video front end: RGB frames -> one vector per frame, the same CNN applied across time.

::

    frames (B, T, S, S, 3) uint8 --valid frames only--> (N, 3, S, S) in [-1, 1]
        -> [Conv2d 3x3 -> ReLU -> MaxPool 2] x 3 (C, 2C, 4C channels)
        -> flatten (4C * S/8 * S/8) -> Linear -> (N, E) --scatter--> (B, T, E), padding 0

The classic CNN+RNN video classifier (Donahue et al. 2015, "Long-term Recurrent
Convolutional Networks"): the CNN sees one frame at a time, the RNN stack above models
the order of frames. Trained from scratch (no downloaded weights on these machines), so
it is small. It flattens its last feature map instead of pooling it globally: where the
object is in the frame is what motion is made of, and global pooling would throw it away.

Frames travel through Ray Data and the pipeline as uint8 (a quarter of float32's bytes)
and are scaled to [-1, 1] here, on the stage's device. Only the valid frames of each row
go through the CNN (bucketing keeps padding small, but padded frames are never computed
at all), so a clip scores the same alone or padded in a batch. The layer is causal in
time (frame t depends on frame t only): it streams in chunks for the wavefront schedule.
No batch normalisation: its statistics would depend on how a batch is cut into
micro-batches, and pipeline runs must equal the single process.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import padding_mask

BLOCKS = 3
"""Conv-ReLU-pool blocks: each halves the frame side, so ``size`` must divide by 8."""


class FrameEncoder(nn.Module):
    """``(B, T, size, size, 3)`` uint8 (or float in [0, 255]) -> ``(B, T, output_size)``."""

    time_streaming = True

    def __init__(self, *, frame_size: int, channels: int, output_size: int) -> None:
        super().__init__()
        if frame_size % (2**BLOCKS):
            raise ValueError(f"video frames must be a multiple of {2**BLOCKS} pixels wide, got {frame_size}")
        blocks, width = [], 3
        for i in range(BLOCKS):
            conv = nn.Conv2d(width, channels * 2**i, 3, padding=1)
            # He init: PyTorch's default shrinks activations ~2x per block, so the frame
            # vectors started 7x smaller (std 0.03) and their change over time 14x smaller.
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            blocks += [conv, nn.ReLU(), nn.MaxPool2d(2)]
            width = channels * 2**i
        self.cnn = nn.Sequential(*blocks)
        side = frame_size // 2**BLOCKS
        self.proj = nn.Linear(width * side * side, output_size)
        self.frame_size = frame_size
        self.output_size = output_size

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._encode(frames, padding_mask(lengths.to(frames.device), frames.size(1)))

    def forward_chunk(self, frames: torch.Tensor, lengths: torch.Tensor, offset: int,
                      state: None) -> tuple[torch.Tensor, None]:
        steps = torch.arange(offset, offset + frames.size(1), device=frames.device)
        return self._encode(frames, steps.unsqueeze(0) < lengths.to(frames.device).unsqueeze(1)), None

    def _encode(self, frames: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        shape = (self.frame_size, self.frame_size, 3)
        if frames.dim() != 5 or tuple(frames.shape[2:]) != shape:
            raise ValueError(f"expected frames (batch, time, {', '.join(map(str, shape))}), got {tuple(frames.shape)}")
        dtype = self.proj.weight.dtype
        x = frames[valid].to(dtype).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, 3, S, S)
        features = self.proj(self.cnn(x).flatten(1))
        out = features.new_zeros(*frames.shape[:2], self.output_size)
        out[valid] = features
        return out

    def flops_per_token(self) -> float:
        """Per frame: each convolution over its output positions, and the projection."""
        flops, side = 0.0, self.frame_size
        for layer in self.cnn:
            if isinstance(layer, nn.Conv2d):
                flops += 2.0 * layer.weight.numel() * side * side
            elif isinstance(layer, nn.MaxPool2d):
                side //= 2
        return flops + 2.0 * self.proj.weight.numel()

    def extra_repr(self) -> str:
        return f"frame_size={self.frame_size}"


def video_frontend(config, frame_size: int) -> FrameEncoder:
    """The recipe's front end: ``frontend_channels`` in the first block (doubling per
    block), ``embed_dim`` wide like the token embedding it stands in for."""
    return FrameEncoder(frame_size=frame_size, channels=config.frontend_channels, output_size=config.embed_dim)
