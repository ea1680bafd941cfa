"""What the plots draw."""

import numpy as np

from astropt.fit_scaling.compute import ComputeModel
from astropt.fit_scaling.envelope import Curve
from astropt.fit_scaling.plots import curve_points


def test_a_validation_curve_is_drawn_from_its_first_evaluation_not_from_step_zero():
    curve = Curve("c", N=1e4, tokens=np.array([0.0, 100.0, 200.0]), loss=np.array([0.4, 0.3, 0.2]))
    c, loss = curve_points(curve, ComputeModel())
    np.testing.assert_allclose(c, [6e6, 1.2e7])
    np.testing.assert_allclose(loss, [0.3, 0.2])
