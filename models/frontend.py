"""Audio front end: log-mel frames -> a 4x shorter sequence of vectors for the RNN stack.

::

    features (B, 4L, F) --SpecAugment (training)--> Conv2d 3x3 stride 2 -> ReLU
        -> Conv2d 3x3 stride 2 -> ReLU -> (B, C, L, F/4) -> Linear -> (B, L, D)

Two stride-2 convolutions over (time, frequency), as in ESPnet's ``Conv2dSubsampling``
and Deep Speech 2: the recurrent layers then run a quarter of the steps (40 ms per step at
a 10 ms hop), which is where an RNN's time goes. ``lengths`` are already the *subsampled*
lengths ``L`` (the data pipeline pads every utterance to a multiple of :data:`SUBSAMPLING`
frames), so this layer follows the stack's convention unchanged: every layer sees the
same ``lengths``. Frames past a row's ``4 L`` are zeroed before each convolution, so
padding never reaches a valid output: an utterance scores the same alone or padded in a
batch.

SpecAugment (Park et al. 2019) masks random bands and frame spans of each training
utterance (to 0, the per-band mean after normalisation). Its masks come from the same
keyed generators as :class:`~models.dropout.SeededDropout`, so a pipeline-parallel run
masks exactly what a single process does.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import SUBSAMPLING
from models.dropout import keyed_generator
from models.layers import padding_mask


def _conv_width(width: int) -> int:
    return (width - 1) // 2 + 1  # kernel 3, stride 2, padding 1


class ConvSubsampler(nn.Module):
    """``(B, 4L, feature_dim)`` float frames -> ``(B, L, output_size)``; padded steps are 0."""

    def __init__(self, *, feature_dim: int, channels: int, output_size: int, stream: int,
                 freq_masks: int = 0, freq_width: int = 8, time_masks: int = 0, time_width: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.proj = nn.Linear(channels * _conv_width(_conv_width(feature_dim)), output_size)
        self.stream = stream
        self.feature_dim = feature_dim
        self.output_size = output_size
        self.spec_augment = (freq_masks, freq_width, time_masks, time_width)

    time_streaming = False

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3 or features.size(-1) != self.feature_dim:
            raise ValueError(f"expected features (batch, frames, {self.feature_dim}), got {tuple(features.shape)}")
        features = features.to(self.conv1.weight.dtype)  # data is float32; float64 runs check equivalence
        frames = lengths * SUBSAMPLING
        if self.training and any(self.spec_augment[::2]):
            features = self._spec_augment(features, frames)
        x = (features * padding_mask(frames.to(features.device), features.size(1)).unsqueeze(-1)).unsqueeze(1)
        x = torch.relu(self.conv1(x))
        x = x * padding_mask((lengths * 2).to(x.device), x.size(2))[:, None, :, None]
        x = torch.relu(self.conv2(x))  # (B, C, L', F')
        x = self.proj(x.permute(0, 2, 1, 3).flatten(2))
        return x * padding_mask(lengths.to(x.device), x.size(1)).unsqueeze(-1)

    def _spec_augment(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Zero ``freq_masks`` bands of width U[0, freq_width] and ``time_masks`` spans of
        width U[0, min(time_width, 20% of the row)] in each row, positions uniform."""
        freq_masks, freq_width, time_masks, time_width = self.spec_augment
        generator = keyed_generator(self.stream + 10_000, features.device)
        batch, steps, bands = features.shape
        keep = torch.ones(batch, steps, bands, dtype=torch.bool, device=features.device)
        bins = torch.arange(bands, device=features.device)
        times = torch.arange(steps, device=features.device)
        for row in range(batch):
            for _ in range(freq_masks):
                width = int(torch.randint(0, freq_width + 1, (1,), generator=generator, device=features.device))
                start = int(torch.randint(0, max(bands - width, 0) + 1, (1,), generator=generator,
                                          device=features.device))
                keep[row] &= ~((bins >= start) & (bins < start + width)).unsqueeze(0)
            length = int(frames[row])
            widest = min(time_width, length // 5)
            for _ in range(time_masks):
                width = int(torch.randint(0, widest + 1, (1,), generator=generator, device=features.device))
                start = int(torch.randint(0, max(length - width, 0) + 1, (1,), generator=generator,
                                          device=features.device))
                keep[row] &= ~((times >= start) & (times < start + width)).unsqueeze(1)
        return features * keep

    def flops_per_token(self) -> float:
        """Per output step: both convolutions over their output positions, and the projection."""
        c1 = self.conv1.weight.numel() * 2 * _conv_width(self.feature_dim)
        c2 = self.conv2.weight.numel() * _conv_width(_conv_width(self.feature_dim))
        return 2.0 * (c1 + c2 + self.proj.weight.numel())

    def extra_repr(self) -> str:
        return f"subsampling={SUBSAMPLING}, spec_augment={self.spec_augment}"


def audio_frontend(config, feature_dim: int, stream: int = 0) -> ConvSubsampler:
    """The recipe's front end (``model.*`` fields of :class:`~models.config.ModelConfig`):
    ``embed_dim`` wide, like the token embedding it stands in for."""
    return ConvSubsampler(
        feature_dim=feature_dim, channels=config.frontend_channels, output_size=config.embed_dim, stream=stream,
        freq_masks=config.spec_freq_masks, freq_width=config.spec_freq_width,
        time_masks=config.spec_time_masks, time_width=config.spec_time_width,
    )
