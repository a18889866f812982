"""Training-time augmentation (core/augment.py): what each transform does to a picture."""

import torch

from core.augment import Augment

H, W = 64, 32


def pictures(n: int, seed: int = 0) -> torch.Tensor:
    # No zeros anywhere: zeros in an output can only come from padding or erasing.
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed)) + 1.0


def test_shift_is_a_crop_of_the_zero_padded_picture_within_its_range():
    x = pictures(32)
    augment = Augment(erase=0.0)
    ph, pw = round(augment.shift[0] * H), round(augment.shift[1] * W)
    assert (ph, pw) == (2, 2)  # 10 pixels of a 256 x 128 crop, at 64 x 32
    y = augment(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    offsets = []
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(2 * ph + 1) for dx in range(2 * pw + 1)
                 if torch.equal(y[i], padded[i, :, dy:dy + H, dx:dx + W])]
        assert found, f"picture {i} is not a shifted crop"
        offsets.append(found[0])
    assert len(set(offsets)) > 5  # the shifts vary across the batch


def test_erasing_sets_one_rectangle_to_zero_and_leaves_the_rest():
    x = pictures(64)
    augment = Augment(shift=(0.0, 0.0), erase=1.0)
    y = augment(x, torch.Generator().manual_seed(2))
    zero = (y == 0).all(1)  # (b, H, W): erased in every channel
    assert torch.equal(y[~zero[:, None].expand_as(y)], x[~zero[:, None].expand_as(x)])
    for mask in zero:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        # One filled rectangle: its bounding box is all zeros.
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()
        assert int(mask.sum()) <= round(0.4 * H * W) + H + W  # area at most 40% (+ rounding)
    areas = zero.flatten(1).float().mean(1)
    assert areas.min() > 0 and areas.max() < 0.5 and areas.std() > 0.02


def test_probabilities_zero_change_nothing():
    x = pictures(8)
    assert torch.equal(Augment(shift=(0.0, 0.0), erase=0.0)(x, torch.Generator()), x)


def test_about_half_the_pictures_are_erased_by_default():
    y = Augment(shift=(0.0, 0.0))(pictures(400), torch.Generator().manual_seed(3))
    share = float((y == 0).flatten(1).any(1).float().mean())
    assert 0.4 < share < 0.6


def test_each_process_gets_its_rows_of_the_whole_batch_draw():
    """Under torchrun each rank augments its shard with the draws made for the whole batch,
    and the generator advances the same everywhere: two halves equal the whole."""
    x = pictures(16)
    augment = Augment()
    whole = augment(x, torch.Generator().manual_seed(4))
    halves, states = [], []
    for rank in range(2):
        rng = torch.Generator().manual_seed(4)
        rows = slice(8 * rank, 8 * rank + 8)
        halves.append(augment(x[rows], rng, n=16, keep=lambda t, rows=rows: t[rows]))
        states.append(rng.get_state())
    assert torch.equal(torch.cat(halves), whole)
    assert torch.equal(states[0], states[1])
