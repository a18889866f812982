"""Training-time augmentation of person crops: random shift and random erasing.

The two that "Bag of Tricks" (Luo et al., 2019) found worth most to a re-identification
baseline beside the horizontal flip (which `TrainingImages` always draws): pad by 10 pixels
of a 256x128 crop (4% of its height, 8% of its width) and take a random crop of the original
size, then, with probability 0.5, erase a random rectangle (Zhong et al., 2020: 2% to 40% of
the area, aspect 0.3 to 3.3) to the mean colour, which is 0 once normalised.

Parameters are drawn for the whole batch from the trainer's generator, then each process
keeps its rows (`keep`), so runs reproduce from their seed, under torchrun too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    shift: tuple[float, float] = (10 / 256, 10 / 128)  # largest shift, share of (height, width)
    erase: float = 0.5  # probability of erasing a rectangle
    erase_area: tuple[float, float] = (0.02, 0.4)  # its share of the picture
    erase_aspect: float = 0.3  # height / width within [a, 1 / a]

    def __call__(self, x: torch.Tensor, rng: torch.Generator, n: int | None = None,
                 keep=lambda rows: rows) -> torch.Tensor:
        """x: (b, C, H, W), normalised. n: the whole batch the parameters are drawn for
        (default b); keep: this process's rows of a tensor drawn for the whole batch."""
        n = len(x) if n is None else n
        h, w = x.shape[-2:]
        pad = (round(self.shift[0] * h), round(self.shift[1] * w))
        draws = {  # always drawn, so that the generator advances the same on every process
            "dy": torch.randint(2 * pad[0] + 1, (n,), generator=rng),
            "dx": torch.randint(2 * pad[1] + 1, (n,), generator=rng),
            "erase": torch.rand(n, generator=rng) < self.erase,
            "area": torch.rand(n, generator=rng),
            "aspect": torch.rand(n, generator=rng),
            "top": torch.rand(n, generator=rng),
            "left": torch.rand(n, generator=rng),
        }
        d = {k: keep(v).to(x.device) for k, v in draws.items()}
        if len(d["dy"]) != len(x):
            raise ValueError(f"augmentation drawn for {len(d['dy'])} rows, the batch has {len(x)}")
        return self.erased(self.shifted(x, pad, d["dy"], d["dx"]), d)

    @staticmethod
    def shifted(x: torch.Tensor, pad: tuple[int, int], dy: torch.Tensor, dx: torch.Tensor
                ) -> torch.Tensor:
        """Each picture padded with zeros and cropped back to its size at offset (dy, dx)."""
        if pad == (0, 0):
            return x
        h, w = x.shape[-2:]
        padded = F.pad(x, (pad[1], pad[1], pad[0], pad[0]))
        rows = dy[:, None] + torch.arange(h, device=x.device)  # (b, H)
        cols = dx[:, None] + torch.arange(w, device=x.device)  # (b, W)
        batch = torch.arange(len(x), device=x.device)
        # Advanced indices apart from the channel slice come first: (b, H, W, C).
        out = padded[batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2)

    def erased(self, x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """A rectangle set to 0 in the pictures drawn for it. Where the drawn shape does not
        fit, it is clipped to the picture (Zhong et al. draw again)."""
        h, w = x.shape[-2:]
        lo, hi = self.erase_area
        area = (lo + (hi - lo) * d["area"]) * (h * w)
        log_aspect = math.log(self.erase_aspect) * (1 - 2 * d["aspect"])
        eh = (area * log_aspect.exp()).sqrt().round().clamp(1, h)
        ew = (area / log_aspect.exp()).sqrt().round().clamp(1, w)
        top = (d["top"] * (h - eh + 1)).floor()
        left = (d["left"] * (w - ew + 1)).floor()
        r = torch.arange(h, device=x.device)[None]
        c = torch.arange(w, device=x.device)[None]
        in_rows = (r >= top[:, None]) & (r < (top + eh)[:, None])  # (b, H)
        in_cols = (c >= left[:, None]) & (c < (left + ew)[:, None])  # (b, W)
        mask = in_rows[:, :, None] & in_cols[:, None, :] & d["erase"][:, None, None]
        return x.masked_fill(mask[:, None], 0.0)
