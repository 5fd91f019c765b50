"""The rational-quadratic spline transformer (Durkan et al. 2019), identity outside a box.

Like every transformer (:mod:`jaxmaf.transformers`) it holds no parameters:
a conditioner's outputs ``(..., D, num_params)`` are the bin widths, heights
and knot slopes of each dimension's spline.
"""

from __future__ import annotations

import dataclasses

import distrax
import jax
import jax.numpy as jnp

from jaxmaf.activations import inverse_softplus
from jaxmaf.validation import check_float, check_int

Array = jax.Array


def _rq_log_derivative(z: Array, slope: Array, s0: Array, s1: Array) -> Array:
    """``log g'`` of a rational-quadratic bin at relative position ``z`` in [0, 1].

    ``slope`` is the bin's height / width, ``s0, s1`` its knot slopes
    (Durkan et al. 2019, eq. 5).
    """
    z1mz = z - z * z
    denominator = slope + (s1 + s0 - 2.0 * slope) * z1mz
    return (
        2.0 * jnp.log(slope)
        + jnp.log(s1 * z * z + 2.0 * slope * z1mz + s0 * (1.0 - z) ** 2)
        - 2.0 * jnp.log(denominator)
    )


@dataclasses.dataclass(frozen=True)
class Spline:
    """Rational-quadratic spline transformer (Durkan et al. 2019), identity tails.

    Each dimension's map is a monotonic rational-quadratic spline on
    ``[-tail_bound, tail_bound]`` with ``num_bins`` bins and the identity
    outside (slope 1 at both boundaries, so the map is continuously
    differentiable). The conditioner's ``3 * num_bins + 1`` outputs per
    dimension are distrax's unnormalised bin widths, heights and knot slopes;
    all zeros give equal bins and unit slopes, i.e. the identity. As for
    :class:`Affine`, the spline maps data to noise (density direction, one
    pass) and its inverse (a quadratic root per dimension) samples.

    Args:
      num_bins: number of bins K >= 1.
      tail_bound: half-width B > 0 of the spline's interval.
      min_bin_size: smallest bin width and height (absolute, like
        ``tail_bound``), > 0 with ``num_bins * min_bin_size < 2 * tail_bound``.
      min_knot_slope: smallest knot slope, in ``(0, 1)``.

    Raises:
      ValueError: ``num_bins`` not an integer >= 1 (numpy integers are
        accepted); ``tail_bound`` not finite and > 0; ``min_bin_size`` or
        ``min_knot_slope`` out of range.

    Examples:
      >>> t = Spline(num_bins=8, tail_bound=3.0)
      >>> u, log_d = t.inverse_and_log_det(jnp.array([0.5, 7.0]), jnp.zeros((2, 25)))
      >>> u.tolist(), log_d.tolist()   # identity at zero parameters, inside and outside
      ([0.5, 7.0], [0.0, 0.0])
    """

    num_bins: int = 8
    tail_bound: float = 3.0
    min_bin_size: float = 1e-4
    min_knot_slope: float = 1e-4

    def __post_init__(self):
        num_bins = check_int("num_bins", self.num_bins, minimum=1)
        tail_bound = check_float("tail_bound", self.tail_bound, low=0.0)
        min_bin_size = check_float("min_bin_size", self.min_bin_size, low=0.0)
        if num_bins * min_bin_size >= 2.0 * tail_bound:
            raise ValueError(
                "Expected num_bins * min_bin_size < 2 * tail_bound (the bins must fit in "
                f"[-tail_bound, tail_bound] with room to move), got num_bins={num_bins}, "
                f"min_bin_size={min_bin_size}, tail_bound={tail_bound}."
            )
        min_knot_slope = check_float("min_knot_slope", self.min_knot_slope, low=0.0, high=1.0)
        for name, value in (
            ("num_bins", num_bins),
            ("tail_bound", tail_bound),
            ("min_bin_size", min_bin_size),
            ("min_knot_slope", min_knot_slope),
        ):
            object.__setattr__(self, name, value)

    @property
    def num_params(self) -> int:
        """``3 * num_bins + 1`` conditioner outputs per dimension."""
        return 3 * self.num_bins + 1

    def _spline(self, params: Array) -> distrax.RationalQuadraticSpline:
        return distrax.RationalQuadraticSpline(
            params,
            -self.tail_bound,
            self.tail_bound,
            boundary_slopes="identity",
            min_bin_size=self.min_bin_size,
            min_knot_slope=self.min_knot_slope,
        )

    def _knots(self, params: Array) -> tuple[Array, Array, Array]:
        """Knot positions ``x_k``, ``y_k`` and slopes ``s_k``, each ``(..., K + 1)``.

        The same normalisation as ``distrax.RationalQuadraticSpline`` with
        identity boundary slopes (its two boundary-slope inputs are unused).
        """
        k, lo, hi = self.num_bins, -self.tail_bound, self.tail_bound
        dtype = params.dtype

        def positions(unnormalised):
            sizes = jax.nn.softmax(unnormalised, axis=-1)
            sizes = sizes * ((hi - lo) - k * self.min_bin_size) + self.min_bin_size
            inner = lo + jnp.cumsum(sizes[..., :-1], axis=-1)
            pad = jnp.ones(inner.shape[:-1] + (1,), dtype)
            return jnp.concatenate([lo * pad, inner, hi * pad], axis=-1)

        offset = inverse_softplus(1.0 - self.min_knot_slope)
        slopes = jax.nn.softplus(params[..., 2 * k + 1 : 3 * k] + offset) + self.min_knot_slope
        ones = jnp.ones(slopes.shape[:-1] + (1,), dtype)
        slopes = jnp.concatenate([ones, slopes, ones], axis=-1)
        return positions(params[..., :k]), positions(params[..., k : 2 * k]), slopes

    def _bin(self, v: Array, knots: Array, *tables: Array) -> list[Array]:
        """Left and right values of each table in the bin of ``knots`` that holds ``v``.

        The bin index counts the interior knots at or below ``v`` (so it is a
        valid bin, 0..K-1, for any ``v``); one gather per value instead of
        distrax's masked sum over all bins.
        """
        index = jnp.sum(v[..., None] >= knots[..., 1 : self.num_bins], axis=-1)[..., None]
        return [
            jnp.take_along_axis(t, index + side, axis=-1)[..., 0]
            for t in (knots, *tables)
            for side in (0, 1)
        ]

    def _density(self, x: Array, params: Array) -> tuple[Array, Array]:
        """Spline ``u = g(x)`` and ``log g'(x)``; identity outside the interval."""
        xp, yp, slopes = self._knots(params)
        x0, x1, y0, y1, s0, s1 = self._bin(x, xp, yp, slopes)
        width, height = x1 - x0, y1 - y0
        slope = height / width
        z = jnp.clip((x - x0) / width, 0.0, 1.0)
        z1mz = z - z * z
        denominator = slope + (s1 + s0 - 2.0 * slope) * z1mz
        u = y0 + height * (slope * z * z + s0 * z1mz) / denominator
        log_d = _rq_log_derivative(z, slope, s0, s1)
        inside = (x > -self.tail_bound) & (x < self.tail_bound)
        return jnp.where(inside, u, x), jnp.where(inside, log_d, 0.0)

    def _sampling(self, u: Array, params: Array) -> tuple[Array, Array]:
        """Inverse spline ``x = g^{-1}(u)`` (a quadratic root) and ``log|dx/du|``."""
        xp, yp, slopes = self._knots(params)
        y0, y1, x0, x1, s0, s1 = self._bin(u, yp, xp, slopes)
        width, height = x1 - x0, y1 - y0
        slope = height / width
        w = jnp.clip((u - y0) / height, 0.0, 1.0)
        slopes_term = s1 + s0 - 2.0 * slope
        c = -slope * w
        b = s0 - slopes_term * w
        a = slope - b
        disc = b * b - 4.0 * a * c
        root = jnp.where(disc > 0.0, jnp.sqrt(jnp.clip(disc, jnp.finfo(disc.dtype).tiny)), 0.0)
        # The numerically stable form of the root for each sign of b (Durkan et al. 2019).
        # Each branch divides by a number kept away from 0 where the other branch is taken:
        # a linear bin (the identity start) has a = 0, and the unused 0 / 0 would make the
        # gradient NaN through jnp.where.
        tiny = jnp.finfo(b.dtype).tiny
        positive = b >= 0.0
        z = jnp.where(
            positive,
            2.0 * c / jnp.where(positive, jnp.minimum(-b - root, -tiny), -1.0),
            (-b + root) / jnp.where(positive, 1.0, 2.0 * a),
        )
        z = jnp.clip(z, 0.0, 1.0)
        x = width * z + x0
        log_d = -_rq_log_derivative(z, slope, s0, s1)
        inside = (u > -self.tail_bound) & (u < self.tail_bound)
        return jnp.where(inside, x, u), jnp.where(inside, log_d, 0.0)

    def forward(self, u: Array, params: Array) -> Array:
        """Sampling direction (spline inverse); shapes ``(..., D)``."""
        return self._sampling(u, params)[0]

    def inverse(self, x: Array, params: Array) -> Array:
        """Density direction (spline); shapes ``(..., D)``."""
        return self._density(x, params)[0]

    def forward_and_log_det(self, u: Array, params: Array) -> tuple[Array, Array]:
        """Sampling direction and elementwise ``log|dx/du|`` (``(..., D)`` each)."""
        return self._sampling(u, params)

    def inverse_and_log_det(self, x: Array, params: Array) -> tuple[Array, Array]:
        """Density direction and elementwise ``log|du/dx|`` (``(..., D)`` each)."""
        return self._density(x, params)

    def as_bijector(self, params: Array) -> distrax.Bijector:
        """The elementwise sampling-direction map as a distrax bijector (event_ndims_in=0).

        distrax's own ``RationalQuadraticSpline`` with the same parameters:
        equal to :meth:`forward` up to rounding.
        """
        return distrax.Inverse(self._spline(params))
