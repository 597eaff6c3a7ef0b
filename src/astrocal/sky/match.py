"""Match a measured star list to a reference catalogue.

:func:`match_stars` finds which measured star (pixel position on the detector) is which
reference star (tangent-plane position in arcsec), when the pointing offset, the position
angle and the parity of the image are unknown, the pixel scale is known to within a few
per cent, the star list misses stars and contains spurious detections, the field is
crowded (blends) and the optics distort the image by a few pixels.

Conventions
-----------
Star positions are 0-based pixels (centre of the first pixel = 0.0, ``x`` along numpy
axis 1).  Reference positions are tangent-plane offsets in arcsec (``x`` east-ish, ``y``
north-ish; any 2-D point set in arcsec works).  Internally the reference is expressed in
*nominal pixels*, ``c = P ref * 1000 / pixel_scale_mas`` with ``P = diag(parity, 1)``,
and the pose maps it to the detector as ``p = t + s R(theta) c`` (``s`` dimensionless,
1 = the nominal pixel scale; ``theta`` counter-clockwise from the reference +x axis, after
the parity flip, to the detector +x axis; ``t`` the pixel position of the reference
origin).  A sky image displayed with north up and east to the left, with a reference
whose ``x`` grows to the east, has ``parity = -1``.

Algorithm
---------
1. *Rotation and scale by pair voting.*  Pairs of stars closer than a radius chosen so
   that every star of the sparser list has ~8 neighbours (and farther apart than a few
   blend radii) are compared with reference pairs whose length is
   compatible with the scale range.  Each compatible combination votes for the rotation
   (difference of the pair directions) and scale (ratio of lengths) in a 2-D histogram;
   when both fluxes and magnitudes are given a combination votes only if the magnitude
   difference of the two stars agrees with that of the two reference stars (within
   ``mag_tolerance``).  Pairs are taken within a separation range, not as each star's
   nearest neighbours, so that missing and spurious stars only remove or add votes
   instead of changing which pairs are formed.
2. *Translation by cross-correlation.*  For each of the strongest rotation-scale peaks
   every (star, reference star) combination votes for the translation; the strongest
   peaks of the 2-D translation histogram are candidate poses.
3. *Refinement.*  Each candidate pose is refined by alternating one-to-one
   nearest-neighbour assignment and a robust least-squares fit (similarity, affine, then
   a polynomial of degree ``degree`` that absorbs the distortion), with a tolerance
   shrinking from ``2 tolerance_px`` to ``final_nsigma`` times the residual scatter (or,
   if larger, the radius at which chance pairs would stay below ``max_false_pairs``
   for the whole field, capped at ``blend_radius_px``; at least ``min_tolerance_px``).
   Among candidates within the tolerance the assignment prefers the closest and, with
   fluxes and magnitudes, the one with the consistent flux.
4. *Significance.*  The number ``n`` of stars within ``tolerance_px`` of the reference
   positions predicted by the refined similarity transform is compared with the number
   expected by chance for a pose unrelated to the truth (binomial, with the density of
   reference stars predicted in the field), multiplied by the number of independent
   poses the search could have tried (rotation, scale, translation and parity cells of
   the size of the tolerance).  ``-log10`` of this false-alarm probability is the
   ``significance``; the best pose is accepted if the false-alarm probability is below
   ``max_false_alarm`` and at least ``min_matched`` stars match.  If a different pose
   is also significant with at least half as many stars (a repeated pattern, a
   reference listing the field twice), :class:`MatchError` reports the ambiguity.

Brightest-first: when fluxes and magnitudes are both given and the lists are large, the
votes first use only the brightest stars of both lists (at a common surface density, at
most ``n_bright`` stars), then three and nine times as many (:data:`BRIGHT_STEPS`: the
magnitudes may be of different bands, or the two lists of different depths, so that the
brightest of one are not all among the brightest of the other); if that fails the search
is repeated with all stars.  The refinement always uses all stars.  A dense list (10,000
sources against 2,000 catalogue stars) is matched this way in about a second; with
positions only, the same takes a minute or more and can fail (every star has dozens of
chance neighbours).

Blends: reference stars closer to each other than ``blend_radius_px`` are one blended
source to the matcher (predicted at their flux-weighted centre, with their combined
magnitude); a star matched to such a group is reported with the group's brightest member
and flagged as a blend.  A star with another measured star within ``blend_radius_px``
is flagged as a blend too.  Blended pairs are reported but not used in the transform
fits.

Flux-magnitude consistency: with fluxes and magnitudes, the zero point and scatter of
``mag + 2.5 log10(flux)`` are fitted robustly over the matched pairs; the final
assignment prefers, among the candidates within the tolerance, the one with the
consistent flux, and pairs more than ``flux_nsigma`` sigma off are dropped
(``flux_check="reject"``, the default: listed in ``flux_rejected``), flagged
(``"flag"``) or kept without a look (``"off"``).

Where the steps live: the votes of steps 1 and 2 in :mod:`astrocal.sky.match_voting`,
the refinement of step 3 in :mod:`astrocal.sky.match_refine` (with the pose models, fits
and assignment shared with pinhole identification, :mod:`astrocal.pointmatch`), the
significance of step 4 in :mod:`astrocal.sky.match_significance`, the blend groups in
:mod:`astrocal.sky.match_blends` and the reported transforms in
:mod:`astrocal.sky.match_transforms`.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import astropy.units as u
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from .._moved import moved_module
from ..errors import AstrocalError
from ..pointmatch import inside, pixel_scale_mas as pixel_scale_mas_value
from . import match_transforms
from .match_blends import make_sources
from .match_refine import Refiner, near_solution, same_pose
from .match_significance import log10_trials
from .match_voting import VoteConfig, rotation_peaks, translation_peaks

if TYPE_CHECKING:
    from .match_transforms import AffineTransform, PolynomialTransform, SimilarityTransform

__all__ = [
    "MatchError",
    "MatchResult",
    "match_stars",
]

log = logging.getLogger(__name__)

# the reported transforms moved to astrocal.sky.match_transforms (issue 20)
__getattr__ = moved_module(__name__, "astrocal.sky.match_transforms")


#: the brightest-first passes use n_bright times these many stars (then all stars)
BRIGHT_STEPS = (1, 3, 9)


class MatchError(AstrocalError, ValueError):
    """The stars could not be matched to the reference (the message says what was tried)."""


# ============================================================================ inputs
def _column(table, name, what, source):
    if name not in table.colnames:
        raise MatchError(f"{source}: no column '{name}' for the {what} (columns: {', '.join(table.colnames)})")
    col = table[name]
    arr = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) if hasattr(col, "mask") else None
    if arr is None:
        arr = np.asarray(col, dtype=float)
    return np.asarray(arr, dtype=float), getattr(col, "unit", None)


def _stars_input(stars, x_col, y_col, flux_col, sigma_cols):
    """(xy (N, 2) px, flux (N,) or None, sigma (N,) px or None)."""
    if isinstance(stars, Table):
        x, ux = _column(stars, x_col, "star x position", "star list")
        y, uy = _column(stars, y_col, "star y position", "star list")
        for name, unit in ((x_col, ux), (y_col, uy)):
            if unit is not None and u.Unit(unit) not in (u.pix, u.dimensionless_unscaled):
                raise MatchError(f"star list: column '{name}' has unit '{unit}'; expected pixels")
        flux = None
        fc = flux_col if flux_col is not None else ("flux" if "flux" in stars.colnames else None)
        if fc is not None:
            flux, _ = _column(stars, fc, "star flux", "star list")
        sig = None
        sx_name, sy_name = sigma_cols
        if sx_name in stars.colnames and sy_name in stars.colnames:
            sx, _ = _column(stars, sx_name, "x error", "star list")
            sy, _ = _column(stars, sy_name, "y error", "star list")
            sig = np.sqrt(0.5 * (sx ** 2 + sy ** 2))
        xy = np.column_stack([x, y])
    else:
        if isinstance(stars, u.Quantity):
            stars = stars.to_value(u.pix)
        arr = np.asarray(stars, dtype=float)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise MatchError(f"stars must be a Table with '{x_col}', '{y_col}' (and optionally "
                             f"'flux', 'sigma_x', 'sigma_y') or an (N, 2) / (N, 3) array of x, y "
                             f"(, flux) in pixels; got shape {arr.shape}")
        xy = arr[:, :2].copy()
        flux = arr[:, 2].copy() if arr.shape[1] > 2 else None
        sig = None
    return xy, flux, sig


def _to_arcsec(values, unit, name):
    if unit is None or u.Unit(unit) == u.dimensionless_unscaled:
        return values
    try:
        return (values * u.Unit(unit)).to_value(u.arcsec)
    except u.UnitConversionError:
        raise MatchError(f"reference: column '{name}' has unit '{unit}'; expected an angle "
                         "(tangent-plane offsets, arcsec)") from None


def _reference_input(reference, x_col, y_col, mag_col):
    """(xy (M, 2) arcsec, mag (M,) or None)."""
    if isinstance(reference, Table):
        x, ux = _column(reference, x_col, "reference x position", "reference")
        y, uy = _column(reference, y_col, "reference y position", "reference")
        x = _to_arcsec(x, ux, x_col)
        y = _to_arcsec(y, uy, y_col)
        mc = mag_col if mag_col is not None else ("mag" if "mag" in reference.colnames else None)
        mag = _column(reference, mc, "reference magnitude", "reference")[0] if mc is not None else None
        return np.column_stack([x, y]), mag
    if isinstance(reference, u.Quantity):
        arr = reference.to_value(u.arcsec)
    else:
        arr = np.asarray(reference, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise MatchError(f"reference must be a Table with '{x_col}', '{y_col}' (arcsec; optionally "
                         f"a magnitude column) or an (M, 2) / (M, 3) array of x, y (, mag) in "
                         f"arcsec; got shape {arr.shape}")
    return arr[:, :2].astype(float), (arr[:, 2].astype(float) if arr.shape[1] > 2 else None)


def _parse_rotation(rotation, rotation_tolerance):
    """None (any) or (center_rad, half_width_rad)."""
    if rotation is None:
        return None
    if isinstance(rotation, (tuple, list)) and len(rotation) == 2:
        rotation, rotation_tolerance = rotation
    ang = u.Quantity(rotation, u.deg) if isinstance(rotation, u.Quantity) else rotation * u.deg
    tol = (u.Quantity(rotation_tolerance, u.deg) if isinstance(rotation_tolerance, u.Quantity)
           else rotation_tolerance * u.deg)
    tol_rad = float(tol.to_value(u.rad))
    if not (tol_rad > 0):
        raise MatchError(f"rotation_tolerance must be positive, got {rotation_tolerance!r}")
    if tol_rad >= math.pi:
        return None
    return float(ang.to_value(u.rad)), tol_rad


def _parse_parity(parity):
    if parity is None:
        return [1, -1]
    if isinstance(parity, (bool, np.bool_)):
        raise MatchError(f"parity must be None (try both), 1 (not flipped) or -1 (reference x "
                         f"flipped), not a bool ({parity!r})")
    if parity in (1, False, "normal", "+1"):
        return [1]
    if parity in (-1, True, "flipped", "flip", "-1"):
        return [-1]
    raise MatchError(f"parity must be None (try both), 1 (not flipped) or -1 (reference x "
                     f"flipped), got {parity!r}")


def _length_px(value, pix_mas, what):
    """A length in pixels from px (float or pix Quantity) or an angle Quantity."""
    if value is None:
        return None
    if isinstance(value, u.Quantity):
        if value.unit.physical_type == "angle":
            return float(value.to_value(u.mas)) / pix_mas
        try:
            return float(value.to_value(u.pix))
        except u.UnitConversionError:
            raise MatchError(f"{what}: expected pixels or an angle, got {value!r}") from None
    return float(value)


# ============================================================================ result
@dataclass
class MatchResult:
    """The outcome of :func:`match_stars`.

    Indices are rows of the inputs as given (rows with non-finite positions included).
    Pairs, sorted by star row: ``star_index[k]`` is reference entry ``ref_index[k]``;
    ``blend[k]`` flags a blended pair (a reference blend group — ``blend_members[k]``
    lists all its reference entries — or a star with another measured star within the
    blend radius); blended pairs are not used in the transform fits.  ``residual_px`` is
    star minus ``polynomial(reference)``.  ``flux_outlier`` flags pairs whose flux does
    not follow the fitted flux-magnitude relation (``flux_check="flag"``);
    ``flux_rejected`` lists the (star, reference) pairs dropped for it
    (``flux_check="reject"``).  ``star_blend`` (one flag per input star row) marks stars
    with a measured neighbour within the blend radius or matched to a blend.

    Transforms (reference arcsec -> detector px): ``similarity``, ``affine`` and
    ``polynomial`` (degree ``polynomial.degree``, absorbs the distortion over the
    matched stars).

    Quality (``quality`` dict): ``n_matched``, ``n_stars`` (valid positions),
    ``n_reference_in_field`` (reference entries predicted on the detector),
    ``fraction`` (n_matched / min(n_stars, n_reference_in_field)), ``rms_px`` (final
    polynomial fit, non-blended pairs), ``sigma_px`` (robust per-axis scatter),
    ``tolerance_px`` (final matching radius, median over stars), ``significance``
    (-log10 of the false-alarm probability, see the module docstring),
    ``log10_false_alarm``, ``n_significance`` (stars within ``tolerance_px`` of the
    similarity prediction) and ``expected_chance_matches`` (what a random pose would
    give), ``expected_false_pairs`` (pairs expected to be chance coincidences at the
    final tolerance), ``runner_up`` (the best different pose, if any), the search
    statistics and ``seconds``.

    Unmatched: ``unmatched_stars`` (rows of the star list; rows with non-finite positions
    are listed in ``invalid_stars``), ``unmatched_reference`` (reference entries predicted
    on the detector without a star, blend companions excluded), ``reference_outside``
    (predicted off the detector), ``invalid_reference`` (non-finite positions).
    """

    star_index: np.ndarray
    ref_index: np.ndarray
    blend: np.ndarray
    blend_members: list
    residual_px: np.ndarray
    flux_outlier: np.ndarray
    similarity: SimilarityTransform
    affine: AffineTransform | None
    polynomial: PolynomialTransform
    quality: dict
    unmatched_stars: np.ndarray
    unmatched_reference: np.ndarray
    reference_outside: np.ndarray
    invalid_stars: np.ndarray
    invalid_reference: np.ndarray
    star_blend: np.ndarray
    flux_rejected: np.ndarray
    tried: str = ""

    @property
    def n_matched(self) -> int:
        """The number of matched pairs."""
        return int(len(self.star_index))

    @property
    def pairs(self) -> np.ndarray:
        """(n, 2) array of (star index, reference index)."""
        return np.column_stack([self.star_index, self.ref_index])

    def predict(self, ref_xy_arcsec: ArrayLike, model: str = "polynomial") -> np.ndarray:
        """Detector position (px) of reference positions (arcsec) with the chosen model.

        Parameters
        ----------
        ref_xy_arcsec : array_like
            (N, 2) or (2,) reference positions, arcsec.
        model : str
            ``"polynomial"``, ``"affine"`` or ``"similarity"``.

        Returns
        -------
        np.ndarray
            (N, 2) detector positions, 0-based px.
        """
        return {"polynomial": self.polynomial, "affine": self.affine,
                "similarity": self.similarity}[model](ref_xy_arcsec)

    def to_table(self) -> Table:
        """The matched pairs as a Table (one row per pair).

        Returns
        -------
        Table
            Columns ``star_index``, ``ref_index``, ``dx``, ``dy`` (residual, px),
            ``blend``, ``flux_outlier``, ``n_blend_members``; ``meta['match_quality']``
            (the quality without the runner-up) and ``meta['similarity']``.
        """
        t = Table()
        t["star_index"] = self.star_index
        t["ref_index"] = self.ref_index
        t["dx"] = self.residual_px[:, 0] * u.pix
        t["dy"] = self.residual_px[:, 1] * u.pix
        t["blend"] = self.blend
        t["flux_outlier"] = self.flux_outlier
        t["n_blend_members"] = np.array([len(m) for m in self.blend_members], np.int64)
        t.meta["match_quality"] = {k: v for k, v in self.quality.items() if k != "runner_up"}
        t.meta["similarity"] = self.similarity.as_dict()
        return t


# ============================================================================ main
def _footprint_area(p):
    """Area of the bounding box of points (px^2), at least 1."""
    if len(p) < 2:
        return 1.0
    ext = p.max(axis=0) - p.min(axis=0)
    return float(max(ext[0], 1.0) * max(ext[1], 1.0))


@dataclass
class _Problem:
    """The validated inputs of one match (finite rows only) and the search range."""

    xy: np.ndarray              # (N, 2) star positions, px
    star_rows: np.ndarray       # their rows in the input
    ok_star: np.ndarray         # input rows with finite positions
    ref: np.ndarray             # (M, 2) reference positions, arcsec
    ref_rows: np.ndarray
    ok_ref: np.ndarray
    mu: np.ndarray | None       # star instrumental magnitudes
    mag: np.ndarray | None      # reference magnitudes
    sig_star: np.ndarray        # star position errors, px (0: unknown)
    pix_mas: float
    rot: tuple | None
    parities: list
    tol_px: float
    box: tuple
    origin: np.ndarray
    max_off_px: float | None
    s_lo: float
    s_hi: float
    base_tried: str

    @property
    def width(self):
        return self.box[1] - self.box[0]

    @property
    def height(self):
        return self.box[3] - self.box[2]

    @property
    def area(self):
        return (self.box[1] - self.box[0]) * (self.box[3] - self.box[2])


def _inputs(stars, reference, pixel_scale_mas, scale_tolerance, rotation, rotation_tolerance, parity,
            max_offset, expected_origin_px, detector_shape, tolerance_px, flux_check,
            x_col, y_col, flux_col, sigma_cols, ref_x_col, ref_y_col, ref_mag_col):
    """Validate the inputs of :func:`match_stars` (finite rows, units, search range)."""
    pix_mas = pixel_scale_mas_value(pixel_scale_mas)
    if not 0 < scale_tolerance < 0.5:
        raise MatchError(f"scale_tolerance must be in (0, 0.5), got {scale_tolerance!r}")
    if flux_check not in ("flag", "reject", "off"):
        raise MatchError(f"flux_check must be 'flag', 'reject' or 'off', got {flux_check!r}")
    xy_all, flux_all, sig_all = _stars_input(stars, x_col, y_col, flux_col, sigma_cols)
    ref_all, mag_all = _reference_input(reference, ref_x_col, ref_y_col, ref_mag_col)
    rot = _parse_rotation(rotation, rotation_tolerance)
    parities = _parse_parity(parity)
    tol_px = float(tolerance_px)
    if not tol_px > 0:
        raise MatchError(f"tolerance_px must be positive, got {tolerance_px!r}")

    ok_star = np.all(np.isfinite(xy_all), axis=1)
    ok_ref = np.all(np.isfinite(ref_all), axis=1)
    star_rows = np.nonzero(ok_star)[0]
    ref_rows = np.nonzero(ok_ref)[0]
    xy = xy_all[ok_star]
    ref = ref_all[ok_ref]
    n_stars, n_ref = len(xy), len(ref)

    with np.errstate(divide="ignore", invalid="ignore"):
        mu = None if flux_all is None else np.where(flux_all[ok_star] > 0,
                                                    -2.5 * np.log10(flux_all[ok_star]), np.nan)
    mag = None if mag_all is None else mag_all[ok_ref].astype(float)
    if mu is not None and not np.any(np.isfinite(mu)):
        mu = None
    if mag is not None and not np.any(np.isfinite(mag)):
        mag = None
    sig_star = np.zeros(n_stars) if sig_all is None else np.nan_to_num(sig_all[ok_star], nan=0.0)

    if detector_shape is None:
        if n_stars == 0:
            raise MatchError("no star with a finite position and no detector_shape given")
        box = (float(xy[:, 0].min()) - 0.5, float(xy[:, 0].max()) + 0.5,
               float(xy[:, 1].min()) - 0.5, float(xy[:, 1].max()) + 0.5)
    else:
        ny, nx = (int(v) for v in detector_shape)
        box = (-0.5, nx - 0.5, -0.5, ny - 0.5)
    origin = (np.array([(box[0] + box[1]) / 2, (box[2] + box[3]) / 2]) if expected_origin_px is None
              else np.asarray(expected_origin_px, float).reshape(2))
    max_off_px = _length_px(max_offset, pix_mas, "max_offset")

    s_lo, s_hi = 1.0 - scale_tolerance, 1.0 + scale_tolerance
    rot_txt = ("any rotation" if rot is None else
               f"rotation {math.degrees(rot[0]):g} +- {math.degrees(rot[1]):g} deg")
    par_txt = "both parities" if len(parities) == 2 else f"parity {parities[0]:+d}"
    off_txt = ("any offset" if max_off_px is None else
               f"offset of the reference origin within {max_off_px:.0f} px of pixel "
               f"({origin[0]:.0f}, {origin[1]:.0f})")
    base_tried = (f"{n_stars} stars{' with fluxes' if mu is not None else ''} against {n_ref} "
                  f"reference stars{' with magnitudes' if mag is not None else ''}; nominal pixel scale "
                  f"{pix_mas:g} mas/px, scale within +-{scale_tolerance:.0%}, {rot_txt}, {par_txt}, "
                  f"{off_txt}, tolerance {tol_px:g} px")
    if n_stars < 3 or n_ref < 3:
        raise MatchError(f"too few positions to match: {base_tried}; need at least 3 of each")
    return _Problem(xy, star_rows, ok_star, ref, ref_rows, ok_ref, mu, mag, sig_star, pix_mas, rot,
                    parities, tol_px, box, origin, max_off_px, s_lo, s_hi, base_tried)


def _crowded(xy, blend_radius_px):
    """Crowded stars: another measured star within the blend radius."""
    crowded = np.zeros(len(xy), bool)
    cp = cKDTree(xy).query_pairs(float(blend_radius_px), output_type="ndarray")
    if len(cp):
        crowded[cp.ravel()] = True
    return crowded


def _voting_passes(prob, sources, n_bright):
    """The voting passes ``(name, star rows, source rows)``: brightest first (when fluxes
    and magnitudes are given), then all."""
    n_stars, area = len(prob.xy), prob.area
    passes = []
    src_c = sources.c
    src_mag = sources.mag
    a_cat = _footprint_area(src_c)
    rho_cat = len(src_c) / a_cat
    if n_bright and prob.mu is not None and src_mag is not None:
        # the brightest stars of both lists at a common surface density: that of the
        # sparser list, at most n_bright stars in the field (the reference a bit deeper,
        # for stars missing from the list and colour differences)
        # then three and nine times as many (the brightest of two bands, or of a list and a
        # catalogue of different depths, overlap the more the deeper one goes), before all
        rank_x = np.argsort(np.where(np.isfinite(prob.mu), prob.mu, np.inf), kind="stable")
        rank_c = np.argsort(np.where(np.isfinite(src_mag), src_mag, np.inf), kind="stable")
        for grow in BRIGHT_STEPS:
            n_x = int(min(n_stars, grow * n_bright, max(math.ceil(grow * rho_cat * area), 10)))
            n_c = int(min(len(src_c), max(n_x, math.ceil(1.3 * n_x / area * a_cat))))
            if not (n_x < 0.67 * n_stars or n_c < 0.67 * len(src_c)):
                break
            passes.append((f"brightest{'' if grow == 1 else f' x{grow}'}", rank_x[:n_x], rank_c[:n_c]))
    passes.append(("all", np.arange(n_stars), np.arange(len(src_c))))
    return passes


def _search_pass(prob, sources, refiner, ix, ic, vcfg, blend_radius_px, max_refine, l10_trials):
    """Steps 1 to 3 on the stars ``ix`` and sources ``ic`` of one voting pass: rotation and
    scale by pair voting, translation by cross-correlation, refinement of the candidates.
    Returns (refined solutions, votes, candidate poses, poses refined)."""
    tol_px = prob.tol_px
    xs = prob.xy[ix]
    cs = sources.c[ic]
    mus = None if prob.mu is None else prob.mu[ix]
    mags = None if sources.mag is None else sources.mag[ic]
    # separation range: ~8 neighbours per star at the density of the sparser list
    rho = min(len(xs) / prob.area, len(cs) / _footprint_area(sources.c))
    rmax = math.sqrt(8.0 / (math.pi * max(rho, 1e-12)))
    rmax = min(rmax, 0.5 * min(prob.width, prob.height))
    rmin = max(3.0 * float(blend_radius_px), 2.0 * tol_px / 5.0, 5.0)
    n_votes = 0
    cands = []
    for par in prob.parities:
        cpar = cs * [float(par), 1.0]
        # step 1: rotation and scale
        rpeaks, nv = rotation_peaks(xs, mus, cpar, mags, rmin, rmax, vcfg, n_peaks=4)
        n_votes += nv
        for (sc, th, _, _) in rpeaks:
            # step 2: translation
            tpeaks = translation_peaks(xs, cpar, sc, th, bin_px=max(3.0 * tol_px, 12.0), n_peaks=3,
                                       origin=prob.origin, max_offset_px=prob.max_off_px)
            cands.extend((tv, par, sc, th, np.array([tx, ty])) for (tx, ty, tv) in tpeaks)
    # step 3: refine the candidates with the most translation votes first
    cands.sort(key=lambda cd: -cd[0])
    pass_solutions = []
    n_refined = 0
    for tv, par, sc, th, tt in cands[:max_refine]:
        if any(near_solution(sol, par, sc, th, tt, sources, tol_px) for sol in pass_solutions):
            continue
        sol = refiner.refine(par, sc, th, tt, l10_trials)
        n_refined += 1
        if sol is not None:
            pass_solutions.append(sol)
    return pass_solutions, n_votes, len(cands), n_refined


def _accept(accepted, solutions, sources, prob, tried, min_matched, max_false_alarm, log10_max_fap):
    """Step 4: the best significant pose and the runner-up, or :class:`MatchError` when none
    is significant or when a different pose is too (ambiguous)."""
    tol_px = prob.tol_px
    if accepted is None:
        best = max(solutions, key=lambda s_: (-s_.log10_fap, s_.n_sig), default=None)
        if best is None:
            msg = f"no candidate pose kept at least min_matched={min_matched} stars"
        else:
            sc_, th_, _ = best.sim.similarity_params()
            msg = (f"the best pose (parity {best.parity:+d}, scale {sc_:.4f}, rotation "
                   f"{math.degrees(th_) % 360:.2f} deg) matches {best.n_sig} stars within {tol_px:g} px "
                   f"where {best.expected_chance:.1f} are expected by chance; false-alarm probability "
                   f"10^{best.log10_fap:.1f} (need < {max_false_alarm:g}, and >= {min_matched} pairs)")
        raise MatchError(f"no match between the stars and the reference: {msg}; tried {tried}. "
                         "Check that the reference covers the field, its units (arcsec) and "
                         "the nominal pixel scale, the parity, and tolerance_px against the "
                         "size of the distortion")
    accepted.sort(key=lambda s_: (s_.log10_fap, -len(s_.src)))
    best = accepted[0]
    runner = None
    for other in sorted(solutions, key=lambda s_: s_.log10_fap):
        if other is best or same_pose(best, other, sources, tol_px):
            continue
        runner = other
        break
    if (runner is not None and runner.log10_fap <= log10_max_fap
            and runner.n_sig >= 0.5 * best.n_sig):
        s1, t1, o1 = best.sim.similarity_params()
        s2, t2, o2 = runner.sim.similarity_params()
        raise MatchError(
            f"ambiguous match: two different poses are both significant: parity {best.parity:+d}, "
            f"rotation {math.degrees(t1) % 360:.2f} deg, reference origin at pixel ({o1[0]:.1f}, "
            f"{o1[1]:.1f}) with {best.n_sig} stars, and parity {runner.parity:+d}, rotation "
            f"{math.degrees(t2) % 360:.2f} deg, origin ({o2[0]:.1f}, {o2[1]:.1f}) with "
            f"{runner.n_sig} stars; constrain rotation, parity or max_offset; tried {tried}")
    return best, runner


def match_stars(stars: Table | ArrayLike, reference: Table | ArrayLike, *,
                pixel_scale_mas: float | u.Quantity, scale_tolerance: float = 0.05,
                rotation: float | u.Quantity | tuple | None = None,
                rotation_tolerance: float | u.Quantity = 5 * u.deg, parity: int | None = None,
                max_offset: float | u.Quantity | None = None, expected_origin_px: ArrayLike | None = None,
                detector_shape: tuple[int, int] | None = None, tolerance_px: float = 10.0,
                min_tolerance_px: float = 0.5, final_nsigma: float = 5.0, degree: int = 3,
                blend_radius_px: float = 4.0, mag_tolerance: float | None = 1.5, flux_check: str = "reject",
                flux_nsigma: float = 5.0, min_matched: int = 6, max_false_alarm: float = 1e-4,
                max_false_pairs: float = 0.001, n_bright: int = 80, max_refine: int = 8,
                x_col: str = "x", y_col: str = "y", flux_col: str | None = None,
                sigma_cols: tuple[str, str] = ("sigma_x", "sigma_y"), ref_x_col: str = "x",
                ref_y_col: str = "y", ref_mag_col: str | None = None) -> MatchResult:
    """Match measured stars to reference stars.

    Parameters
    ----------
    stars : Table or array
        Measured stars: a Table with ``x_col``, ``y_col`` (0-based pixels), optionally a
        flux (``flux_col``, default ``'flux'`` if present) and position errors
        (``sigma_cols``, px), e.g. from :func:`astrocal.sky.starlist.read_star_list`;
        or an (N, 2) / (N, 3) array of x, y (, flux).  Rows with non-finite positions
        are ignored (listed in ``invalid_stars``).
    reference : Table or array
        Reference stars: tangent-plane positions in arcsec (``ref_x_col``,
        ``ref_y_col``; angle units are converted), optionally magnitudes
        (``ref_mag_col``, default ``'mag'`` if present); or an (M, 2) / (M, 3) array of
        x, y (, mag) in arcsec.
    pixel_scale_mas : float or Quantity
        Nominal pixel scale (mas/px); the true one may differ by ``scale_tolerance``.
    scale_tolerance : float
        Largest relative deviation of the scale from nominal (default 0.05).
    rotation : None, angle, or (angle, tolerance)
        ``None``: the position angle is unknown (any rotation is searched).  Otherwise
        the expected rotation (Quantity or degrees; see the module docstring) searched
        within ``rotation_tolerance``.
    parity : None, 1 or -1
        ``None`` tries both; ``-1`` flips the reference x axis (a north-up east-left
        image with an east-growing reference x), ``1`` does not.
    max_offset : None, px or angle Quantity
        ``None``: any translation for which the reference overlaps the field (the
        offset may be as large as the field).  Otherwise the largest distance between
        the reference origin's pixel position and ``expected_origin_px`` (default the
        detector centre).
    detector_shape : (ny, nx), optional
        Detector size (default: the bounding box of the stars).
    tolerance_px : float
        Largest distance (px) between a star and its predicted reference position: must
        exceed the distortion not captured by a similarity transform plus the pose
        error (default 10).  Also the radius of the significance test.
    min_tolerance_px, final_nsigma :
        The final matching radius is ``final_nsigma`` times the residual scatter of the
        polynomial fit (or the star's own error if larger), within
        [``min_tolerance_px``, ``tolerance_px``].
    degree : int
        Degree of the polynomial refinement (lowered when few stars match).
    blend_radius_px : float
        Reference stars closer than this (px, nominal scale) are one blended source;
        measured stars closer than this are flagged as blends.  About the PSF FWHM
        (METIS IMG_LM in L: 3.7 px).
    mag_tolerance : float or None
        Pair votes require ``abs(magnitude difference of the star pair - that of the
        reference pair) <= mag_tolerance`` (when fluxes and magnitudes are given); None
        disables.
    flux_check : "reject", "flag" or "off"
        Pairs whose ``mag + 2.5 log10(flux)`` is more than ``flux_nsigma`` robust sigma
        (at least 0.2 mag) off the median over the pairs are dropped (``"reject"``,
        default; listed in ``flux_rejected``), flagged (``"flag"``: ``flux_outlier``,
        left out of the fits) or not looked at (``"off"``).  Saturated or variable
        stars and strongly coloured sources (a K-band reference for an L-band image) are
        the usual reasons besides wrong pairs.
    min_matched, max_false_alarm :
        Acceptance: at least ``min_matched`` pairs and a false-alarm probability (with
        the look-elsewhere factor, see the module docstring) below ``max_false_alarm``
        (default 1e-4; wrong references measured at >= 10^1.8 in simulations).
    max_false_pairs : float
        The final matching radius may grow beyond ``final_nsigma`` sigma (when the fit
        leaves systematic residuals, e.g. few stars for the polynomial) up to the radius
        where the unmatched stars would make this many chance pairs with the unmatched
        reference stars (expected number, whole field), and never beyond
        ``blend_radius_px``.
    n_bright : int
        Brightest-first voting uses at most this many of the brightest stars (0
        disables the brightest-first pass).
    max_refine : int
        Largest number of candidate poses refined per voting pass.
    x_col, y_col, flux_col, sigma_cols, ref_x_col, ref_y_col, ref_mag_col :
        Column names in the star and reference Tables.

    Returns
    -------
    MatchResult
        The pairs, the fitted transforms, the quality measures and what was left
        unmatched.

    Raises
    ------
    MatchError
        Bad input, or no acceptable match (the message lists what was tried), or two
        different poses both significant (ambiguous).
    """
    t_start = time.perf_counter()
    prob = _inputs(stars, reference, pixel_scale_mas, scale_tolerance, rotation, rotation_tolerance, parity,
                   max_offset, expected_origin_px, detector_shape, tolerance_px, flux_check,
                   x_col, y_col, flux_col, sigma_cols, ref_x_col, ref_y_col, ref_mag_col)
    tol_px = prob.tol_px

    # reference in nominal pixels (parity not applied), blend groups
    c_ref = prob.ref * (1e3 / prob.pix_mas)
    sources = make_sources(c_ref, prob.mag, float(blend_radius_px))
    # crowded stars: another measured star within the blend radius
    crowded = _crowded(prob.xy, blend_radius_px)

    cfg = dict(tolerance_px=tol_px, min_tolerance_px=float(min_tolerance_px), final_nsigma=float(final_nsigma),
               degree=int(degree), anneal_nsig=6.0, min_matched=int(min_matched),
               log10_max_fap=math.log10(max_false_alarm), early_exit_margin=3.0,
               flux_check=flux_check, flux_nsigma=float(flux_nsigma), flux_sigma_floor=0.2,
               max_false_pairs=float(max_false_pairs), blend_radius_px=float(blend_radius_px))
    refiner = Refiner(prob.xy, prob.sig_star, prob.mu, crowded, sources, prob.box, cfg)

    # trials factor: independent poses at the resolution of the tolerance
    l10_trials = log10_trials(prob.width, prob.height, tol_px, prob.rot, scale_tolerance, prob.max_off_px,
                              sources.c, len(prob.parities))

    # voting passes: brightest first (when fluxes and magnitudes are given), then all;
    # steps 1 to 3 in each until one gives a significant pose
    passes = _voting_passes(prob, sources, n_bright)
    vcfg = VoteConfig(prob.s_lo, prob.s_hi, prob.rot, None if mag_tolerance is None else float(mag_tolerance))
    solutions = []
    pass_log = []
    n_refined = 0
    accepted = None
    for name, ix, ic in passes:
        pass_solutions, n_votes, n_cand, n_ref_pass = _search_pass(prob, sources, refiner, ix, ic, vcfg,
                                                                   blend_radius_px, max_refine, l10_trials)
        n_refined += n_ref_pass
        pass_log.append(f"{name} ({len(ix)} stars, {len(ic)} reference sources): {n_votes} pair votes, "
                        f"{n_cand} candidate poses, {min(n_cand, max_refine)} refined")
        solutions.extend(pass_solutions)
        good = [s_ for s_ in pass_solutions if s_.log10_fap <= cfg["log10_max_fap"]
                and len(s_.src) >= min_matched
                and _pose_ok(s_, prob.s_lo, prob.s_hi, prob.rot, prob.max_off_px, prob.origin)]
        if good:
            accepted = good
            break

    # step 4: significance and uniqueness
    tried = f"{prob.base_tried}; passes: " + "; ".join(pass_log)
    best, runner = _accept(accepted, solutions, sources, prob, tried, min_matched, max_false_alarm,
                           cfg["log10_max_fap"])
    return _result(best, runner, sources, prob.xy, prob.star_rows, prob.ref_rows, prob.ok_star, prob.ok_ref,
                   prob.ref, prob.pix_mas, crowded, prob.box, tried, n_refined, l10_trials, t_start, prob.mu,
                   len(prob.xy))


def _pose_ok(sol, s_lo, s_hi, rot, max_off_px, origin):
    s, th, t = sol.sim.similarity_params()
    if not (s_lo - 0.01 <= s <= s_hi + 0.01):
        return False
    if rot is not None:
        d = (th - rot[0] + math.pi) % (2 * math.pi) - math.pi
        if abs(d) > rot[1] + math.radians(0.5):
            return False
    if max_off_px is not None and math.hypot(*(t - origin)) > max_off_px * 1.05 + 5:
        return False
    return True


def _result(best, runner, sources, xy, star_rows, ref_rows, ok_star, ok_ref, ref, pix_mas,
            crowded, box, tried, n_refined, log10_trials, t_start, mu, n_stars):
    par = best.parity
    k = 1e3 / pix_mas
    c = sources.c * [float(par), 1.0]
    src, star = best.src, best.star
    pred = best.model(c[src])
    resid = xy[star] - pred
    blend = sources.is_blend[src] | crowded[star]
    fit_ok = ~blend & ~best.flux_outlier
    rms = float(np.sqrt(np.mean(np.sum(resid[fit_ok] ** 2, axis=1)))) if fit_ok.any() else float("nan")
    # public transforms (reference arcsec)
    s, th, t = best.sim.similarity_params()
    cs = c[src][fit_ok] if fit_ok.sum() >= 3 else c[src]
    xs = xy[star][fit_ok] if fit_ok.sum() >= 3 else xy[star]
    rms_sim = float(np.sqrt(np.mean(np.sum((best.sim(cs) - xs) ** 2, axis=1))))
    similarity = match_transforms.SimilarityTransform((float(t[0]), float(t[1])), float(s), math.degrees(th) % 360.0,
                                     int(par), pix_mas, rms_sim)
    affine = None
    if best.affine is not None:
        A, ta = best.affine.affine_params()
        rms_aff = float(np.sqrt(np.mean(np.sum((best.affine(cs) - xs) ** 2, axis=1))))
        affine = match_transforms.AffineTransform(A @ np.diag([float(par), 1.0]) * k, ta, rms_aff)
    m = best.model
    if m.kind == "similarity":
        a, b, tx, ty = m.coef
        coef = np.array([[tx, ty], [a, b], [-b, a]])
        degree = 1
    else:
        coef = np.asarray(m.coef)
        degree = m.degree
    polynomial = match_transforms.PolynomialTransform(degree, coef, tuple(float(v) / k for v in m.center),
                                                      m.scale / k, int(par), rms)

    # reference in / out of the field (affine prediction; polynomial near the field)
    pred_all = (best.affine or best.sim)(c)
    in_field = inside(pred_all, box)
    matched_src = np.zeros(len(c), bool)
    matched_src[src] = True
    unmatched_ref = np.sort(np.concatenate([sources.members[q] for q in np.nonzero(in_field & ~matched_src)[0]]
                                           or [np.zeros(0, np.int64)]))
    outside_ref = np.sort(np.concatenate([sources.members[q] for q in np.nonzero(~in_field)[0]]
                                         or [np.zeros(0, np.int64)]))
    n_src_in = int(in_field.sum())
    n_ref_in = int(sum(len(sources.members[q]) for q in np.nonzero(in_field)[0]))
    matched_star = np.zeros(len(xy), bool)
    matched_star[star] = True
    area = (box[1] - box[0]) * (box[3] - box[2])
    n_unm_src = int(np.count_nonzero(in_field & ~matched_src))
    n_unm_star = int(np.count_nonzero(~matched_star & inside(xy, box)))
    r_f = best.tol_px
    expected_false = n_unm_star * (-math.expm1(-n_unm_src / area * math.pi * r_f * r_f))
    runner_info = None
    if runner is not None:
        s2, t2, o2 = runner.sim.similarity_params()
        runner_info = {"parity": int(runner.parity), "scale": float(s2),
                       "rotation_deg": math.degrees(t2) % 360.0, "offset_px": [float(o2[0]), float(o2[1])],
                       "n_significance": int(runner.n_sig), "log10_false_alarm": float(runner.log10_fap)}
    quality = {
        "n_matched": int(len(src)),
        "n_blends": int(blend.sum()),
        "n_stars": int(n_stars),
        "n_reference": int(len(ref)),
        "n_reference_in_field": n_ref_in,
        "fraction": float(len(src) / max(1, min(n_stars, n_src_in))),
        "rms_px": rms,
        "sigma_px": float(best.sigma_px),
        "tolerance_px": float(r_f),
        "significance": float(-best.log10_fap),
        "log10_false_alarm": float(best.log10_fap),
        "log10_chance_tail": float(best.log10_tail),
        "log10_trials": float(log10_trials),
        "n_significance": int(best.n_sig),
        "expected_chance_matches": float(best.expected_chance),
        "expected_false_pairs": float(expected_false),
        "n_flux_outliers": int(np.count_nonzero(best.flux_outlier)),
        "flux_zero_point": None if best.flux_zp is None else float(best.flux_zp),
        "flux_scatter_mag": None if best.flux_sigma is None else float(best.flux_sigma),
        "polynomial_degree": int(degree),
        "n_poses_refined": int(n_refined),
        "runner_up": runner_info,
        "seconds": time.perf_counter() - t_start,
    }
    order = np.argsort(star)
    return MatchResult(
        star_index=star_rows[star][order],
        ref_index=ref_rows[sources.rep[src]][order],
        blend=blend[order],
        blend_members=[ref_rows[sources.members[q]] for q in src[order]],
        residual_px=resid[order],
        flux_outlier=best.flux_outlier[order],
        similarity=similarity,
        affine=affine,
        polynomial=polynomial,
        quality=quality,
        unmatched_stars=np.sort(star_rows[~matched_star]),
        unmatched_reference=ref_rows[unmatched_ref],
        reference_outside=ref_rows[outside_ref],
        invalid_stars=np.nonzero(~ok_star)[0],
        invalid_reference=np.nonzero(~ok_ref)[0],
        star_blend=_full(crowded, ok_star, star, blend),
        flux_rejected=np.column_stack([star_rows[best.flux_rejected[1]],
                                       ref_rows[sources.rep[best.flux_rejected[0]]]]).astype(np.int64),
        tried=tried,
    )


def _full(crowded, ok_star, star, blend):
    out = np.zeros(len(ok_star), bool)
    rows = np.nonzero(ok_star)[0]
    out[rows[crowded]] = True
    out[rows[star[blend]]] = True
    return out


