import numpy as np
import pytest

from lol_dreamer.actions import (
    ACTION_NVEC,
    STAND,
    action_space,
    bin_to_unit,
    check_action,
    direction_to_bin,
    noop_action,
)


def test_action_space_is_the_spec():
    space = action_space()
    assert space.nvec.tolist() == [19, 2, 2, 2, 2, 2, 2, 2, 2]
    assert space.dtype == np.int64
    assert tuple(space.nvec) == ACTION_NVEC
    assert space.contains(noop_action())


@pytest.mark.parametrize("k", range(18))
def test_direction_bins_round_trip(k):
    dx, dy = bin_to_unit(k)
    assert direction_to_bin(dx, dy) == k
    assert np.isclose(dx * dx + dy * dy, 1.0)


def test_direction_conventions():
    assert direction_to_bin(1, 0) == 0  # screen right
    assert direction_to_bin(0, 1) in (4, 5)  # 90° lies halfway between bins 4 and 5
    assert direction_to_bin(-1, 0) == 9  # 180°
    assert direction_to_bin(0, 0) == STAND
    assert bin_to_unit(STAND) == (0.0, 0.0)


def test_check_action_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        check_action([0, 1])
    with pytest.raises(ValueError, match="out of range"):
        check_action([19, 0, 0, 0, 0, 0, 0, 0, 0])
    assert check_action([3, 1, 0, 0, 0, 0, 0, 0, 1]).dtype == np.int64
