"""One sky exposure's stars matched to the catalogue's predicted positions.

The catalogue stars around the pointing are moved to the exposure epoch and projected
into the instrument frame (:func:`predict_positions`, with
:func:`astrocal.sky.astrometry.apparent_positions`); the measured stars are matched to
them (:func:`match_exposure`, with :func:`astrocal.sky.match.match_stars`) at the search
tolerances :data:`MATCH_TOLERANCES_PX`, ranked by brightness in a catalogue band
(:func:`rank_band`); :func:`refraction_statement` says what the positions do about
refraction. The sky measure stage (:mod:`astrocal.sky.measure`) calls them.
"""
from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import astropy.units as u
from astropy.table import Table

from .astrometry import AstrometryError, FocalPlanePositions, apparent_positions
from .catalog import Catalog, CatalogError
from .exposure import ExposureSetup, SkyMeasureError
from .match import MatchError, match_stars
from .sites import WeatherError, get_site

if TYPE_CHECKING:
    from .match import MatchResult

__all__ = ["MATCH_TOLERANCES_PX", "MAX_FALSE_ALARM", "predict_positions", "rank_band", "match_exposure",
           "refraction_statement", "wrap180"]

log = logging.getLogger(__name__)

#: search tolerances of the match (px), tried in this order: the smallest that covers the
#: distortion left by a similarity transform gives the most significant match; with a
#: sparse field (~10 stars) against a wide reference a search at 10 px can miss a pose
#: that 5 px finds (tests/sky/test_measure.py), and 20 px serves strongly distorted fields
MATCH_TOLERANCES_PX = (5.0, 10.0, 20.0)
#: largest false-alarm probability of an accepted match, shared among the tolerances tried
MAX_FALSE_ALARM = 1e-4


def predict_positions(catalog: Catalog, setup: ExposureSetup, *, position_angle: float | None,
                      rotator_angle: float | None, parity: int, search_radius_arcsec: float,
                      source: str) -> tuple[FocalPlanePositions, list[str]]:
    """The apparent positions of the catalogue stars near the pointing.

    The stars within ``search_radius_arcsec`` of the pointing, at the exposure's time,
    site, weather, wavelength, horizon and aberration, projected with the given angle and
    parity (:func:`~astrocal.sky.astrometry.apparent_positions`). Its warnings (epoch
    gaps, refraction near the horizon...) are logged and returned.

    Parameters
    ----------
    catalog : Catalog
        The reference catalogue.
    setup : ExposureSetup
        The exposure's metadata.
    position_angle, rotator_angle : float or None
        At most one (deg).
    parity : int
        +1 or -1.
    search_radius_arcsec : float
        Radius of the stars taken around the pointing (arcsec).
    source : str
        Names the exposure in messages.

    Returns
    -------
    tuple
        ``(FocalPlanePositions, warnings)``: the positions (arcsec, instrument frame) and
        the warning messages.

    Raises
    ------
    SkyMeasureError
        No catalogue star near the pointing, or the positions cannot be computed.
    """
    center = (setup.ra_deg, setup.dec_deg)
    try:
        near = catalog.within(center, search_radius_arcsec)
    except CatalogError:
        raise SkyMeasureError(
            f"{source}: the catalogue {catalog.source} has no star within {search_radius_arcsec:.1f} "
            f"arcsec of the pointing (ra {setup.ra_deg:.6f}, dec {setup.dec_deg:.6f} deg): wrong "
            "pointing or catalogue?") from None
    caught = []
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            fp = apparent_positions(near, time=setup.time, pointing=center,
                                    wavelength=setup.wavelength_um, position_angle=position_angle,
                                    rotator_angle=rotator_angle, site=setup.site,
                                    weather=setup.weather, parity=parity, horizon=setup.horizon,
                                    aberration=setup.aberration)
        for w in rec:  # epoch gaps (EpochGapWarning), refraction near the horizon...
            if issubclass(w.category, UserWarning):
                caught.append(str(w.message))
                log.warning("%s: %s", source, w.message)
    except (AstrometryError, WeatherError, CatalogError) as exc:
        raise SkyMeasureError(f"{source}: catalogue {catalog.source}: {exc}") from None
    return fp, caught


# =========================================================================== matching
def rank_band(catalog: Catalog, names: Any, band: str | None) -> tuple[str | None, np.ndarray | None, bool]:
    """The catalogue magnitudes that rank the stars ``names`` by brightness for the match.

    The dataset's ``band`` (the list's own band: also the flux checks), else the
    catalogue's band with the most magnitudes among these stars (any band ranks the
    brightest stars of a field; the flux checks are then off), else ``(None, None,
    False)``.

    Parameters
    ----------
    catalog : Catalog
        The reference catalogue.
    names : array_like of str
        The stars (catalogue names, all present).
    band : str or None
        The dataset's band.

    Returns
    -------
    tuple
        ``(band, magnitudes, same_band)``: the band used, the magnitudes of ``names`` in
        it (mag), and whether it is the dataset's own band.
    """
    if band is not None:
        return band, catalog.mag(band)[_name_index(catalog.names, names)], True
    best, count = None, 0
    rows = _name_index(catalog.names, names)
    for b in catalog.bands:
        n = int(np.count_nonzero(np.isfinite(catalog.mag(b)[rows])))
        if n > count:
            best, count = b, n
    if best is None or count < 3:
        return None, None, False
    return best, catalog.mag(best)[rows], False


def match_exposure(stars: Table, fp: FocalPlanePositions, *, box_arcsec: tuple[float, float],
                   setup: ExposureSetup, pixel_scale_mas: float, shape: tuple[int, int], blend_radius_px: float,
                   mags: np.ndarray | None, source: str, same_band: bool = True,
                   rank_band: str | None = None) -> tuple[MatchResult, np.ndarray]:
    """Match the measured stars to the predicted positions.

    :func:`~astrocal.sky.match.match_stars` with the offset unknown up to the search box,
    any rotation when the position angle is unknown, both parities when the parity is
    unknown, scale within 5 %, at each search tolerance of :data:`MATCH_TOLERANCES_PX`
    (the false-alarm limit :data:`MAX_FALSE_ALARM` shared among them). When a position
    angle or parity is given and no match is found with it, an unconstrained match is
    tried: if that succeeds the exposure fails with the angle and parity the stars do
    match, otherwise with what was tried.

    Parameters
    ----------
    stars : astropy.table.Table
        The usable measured stars: ``x``, ``y`` (px), optional ``sigma_x``, ``sigma_y``,
        ``flux``.
    fp : FocalPlanePositions
        The predicted positions (:func:`predict_positions`).
    box_arcsec : tuple of float
        Half width and half height (arcsec) of the reference taken around the pointing.
    setup : ExposureSetup
        The exposure's metadata (which of angle and parity are known).
    pixel_scale_mas : float
        Nominal pixel scale (mas per pixel).
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    blend_radius_px : float
        Sources closer than this are blends (px).
    mags : numpy.ndarray or None
        The catalogue magnitudes (per row of ``fp``) of ``rank_band``.
    source : str
        Names the exposure in messages.
    same_band : bool, optional
        The magnitudes are of the list's band (pair votes and flux checks use the magnitude
        differences), else they only rank the stars by brightness (brightest first).
    rank_band : str, optional
        The band of ``mags`` (for the record).

    Returns
    -------
    tuple
        ``(MatchResult, reference rows)``: the match and the rows of ``fp`` given to it as
        the reference.

    Raises
    ------
    SkyMeasureError
        No match (with what was tried), or a match only with another orientation.
    """
    hw, hh = box_arcsec
    ref_rows = np.flatnonzero(fp.inside(hw, hh))
    if ref_rows.size < 3:
        raise SkyMeasureError(f"{source}: only {ref_rows.size} catalogue star(s) predicted within "
                              f"+-{hw:.1f} x +-{hh:.1f} arcsec of the pointing: nothing to match")
    ref = Table({"x": fp.x[ref_rows] * u.arcsec, "y": fp.y[ref_rows] * u.arcsec})
    if mags is not None:
        ref["mag"] = mags[ref_rows]
    common = dict(pixel_scale_mas=pixel_scale_mas, scale_tolerance=0.05, detector_shape=shape,
                  blend_radius_px=blend_radius_px, max_offset=None,
                  ref_mag_col="mag" if mags is not None else None,
                  flux_col="flux" if (mags is not None and "flux" in stars.colnames) else None)
    if mags is not None and not same_band:  # another band: brightness ranks only
        common.update(mag_tolerance=None, flux_check="off")
    if mags is None and "flux" in stars.colnames:
        stars = stars.copy(copy_data=False)
        stars.remove_column("flux")  # no magnitudes: match on positions only
    angle_known = setup.position_angle_deg is not None or setup.rotator_angle_deg is not None
    parity_known = setup.parity is not None
    constrained = dict(rotation=0.0 if angle_known else None, rotation_tolerance=5 * u.deg,
                       parity=1 if parity_known else None)
    what = (f"pointing ra {setup.ra_deg:.6f}, dec {setup.dec_deg:.6f} deg, time {setup.time.utc.isot}, "
            f"{ref_rows.size} catalogue stars within +-{hw:.1f} x +-{hh:.1f} arcsec of it")

    def ladder(**kw):
        """match_stars at each search tolerance of MATCH_TOLERANCES_PX, the false-alarm
        limit shared among them; the first accepted match, or MatchError with them all."""
        failures = []
        for tol in MATCH_TOLERANCES_PX:
            try:
                res = match_stars(stars, ref, **common, **kw, tolerance_px=tol,
                                  max_false_alarm=MAX_FALSE_ALARM / len(MATCH_TOLERANCES_PX))
                res.quality["search_tolerance_px"] = float(tol)
                return res
            except MatchError as exc:
                failures.append(f"[search tolerance {tol:g} px] {exc}")
        raise MatchError(" ".join(failures))

    def advice():
        """What to try, when the two lists could not be ranked by brightness."""
        n_list, n_cat = len(stars), int(np.count_nonzero(fp.inside(*_field_half(shape, pixel_scale_mas))))
        if mags is not None and "flux" in stars.colnames:
            return ""
        ratio = max(n_list, 1) / max(n_cat, 1)
        side = ("the star list has no fluxes or magnitudes (name them: flux_col, mag_col)" if "flux" not in
                stars.colnames else "the catalogue has no magnitudes in any band (columns mag_<band>)")
        dense = (f" The lists differ in depth: {n_list} sources against about {n_cat} catalogue stars on the "
                 "detector." if ratio > 3 or ratio < 1 / 3 else "")
        return (f" The match used positions only: {side}.{dense} With brightness on both sides (any bands) the "
                "brightest stars of each are matched first; else cut the deeper list to the other's depth.")

    try:
        return ladder(**constrained), ref_rows
    except MatchError as first:
        if not (angle_known or parity_known):
            raise SkyMeasureError(f"{source}: no match to the catalogue ({what}): {first}{advice()}") from None
        try:
            free = ladder(rotation=None, parity=None)
        except MatchError as second:
            raise SkyMeasureError(
                f"{source}: no match to the catalogue ({what}); with the campaign's "
                f"{'angle' if angle_known else ''}{' and ' if angle_known and parity_known else ''}"
                f"{'parity' if parity_known else ''}: {first}; with any rotation and both parities: "
                f"{second}{advice()}") from None
        sim = free.similarity
        p_match = (setup.parity or 1) * sim.parity
        turn = -p_match * sim.rotation_deg  # instrument frame of the stars minus the campaign's
        if setup.position_angle_deg is not None:
            found = f"position_angle_deg = {wrap180(setup.position_angle_deg + turn):.2f}"
        elif setup.rotator_angle_deg is not None:
            found = f"rotator_angle_deg = {wrap180(setup.rotator_angle_deg + turn):.2f}"
        else:
            found = ""
        campaign = ", ".join(
            ([f"position_angle_deg = {setup.position_angle_deg:g}"] if setup.position_angle_deg is not None
             else [f"rotator_angle_deg = {setup.rotator_angle_deg:g}"] if angle_known else [])
            + ([f"parity = {setup.parity:+d}"] if parity_known else []))
        raise SkyMeasureError(
            f"{source}: the stars match the catalogue only with a different orientation: parity "
            f"{p_match:+d}{', ' + found if found else ''} (the instrument frame turned by "
            f"{wrap180(turn):.2f} deg from the campaign's {campaign}); {free.n_matched} stars "
            f"matched. Check position_angle_deg / rotator_angle_deg and parity ({what})") from None


def wrap180(deg: float) -> float:
    """An angle wrapped to -180 .. 180.

    Parameters
    ----------
    deg : float
        Angle (deg).

    Returns
    -------
    float
        The same angle in ``[-180, 180)`` (deg).
    """
    return float((deg + 180.0) % 360.0 - 180.0)


def _field_half(shape, pixel_scale_mas):
    """Half the detector's width and height on the sky (arcsec, nominal scale)."""
    ny, nx = shape
    return nx * pixel_scale_mas / 2e3, ny * pixel_scale_mas / 2e3


def refraction_statement(catalog: Catalog, setup: ExposureSetup, fp: FocalPlanePositions,
                         half_box: tuple[float, float], source: str) -> dict:
    """What the positions of an exposure do about refraction (``meta["refraction"]``).

    Corrected: how (the clock time and site, or the given zenith distance and parallactic
    angle). Switched off (pressure 0): the differential refraction across the field is not
    corrected; with a known zenith distance (the clock time's, or a given one) its size is
    estimated for the catalogue stars on the detector (``half_box``: half width and height,
    arcsec) with the site's typical weather (the given temperature and humidity): the
    largest displacement relative to the field centre's (``uncorrected_differential_mas``)
    and what is left of it after the best similarity transform, which the exposure's free
    scale and rotation absorb (``uncorrected_beyond_similarity_mas``). Logged as a warning.

    Parameters
    ----------
    catalog : Catalog
        The reference catalogue.
    setup : ExposureSetup
        The exposure's (final) metadata.
    fp : FocalPlanePositions
        The predicted positions.
    half_box : tuple of float
        Half width and height of the detector on the sky (arcsec).
    source : str
        Names the exposure in the log.

    Returns
    -------
    dict
        ``corrected`` (True, False, or None in space) and how; when off the estimated
        sizes and a ``note``.
    """
    if setup.space:
        return {"corrected": None, "space": True, "how": "no atmosphere: an observatory in space"}
    if setup.refraction:
        how = ("astropy AltAz at the exposure's time, site and weather" if setup.clock_time else
               f"astropy AltAz with the field centre at the given zenith distance "
               f"{setup.zenith_distance_deg:g} deg and parallactic angle {setup.parallactic_angle_deg:g} deg "
               "(no clock time)")
        return {"corrected": True, "how": how}
    known = setup.clock_time or setup.zenith_distance_deg is not None
    out = {"corrected": False, "zenith_distance_deg": fp.zenith_distance_deg if known else None,
           "uncorrected_differential_mas": None, "uncorrected_beyond_similarity_mas": None}
    size = "its size is unknown (no zenith distance)"
    if known:
        weather = dict(setup.weather, pressure_hpa=float(get_site(setup.site).pressure_hpa))
        inside = fp.inside(*half_box)
        if np.count_nonzero(inside) >= 3:
            kw = dict(time=fp.time, pointing=(setup.ra_deg, setup.dec_deg), wavelength=setup.wavelength_um,
                      position_angle=fp.position_angle_deg, site=setup.site, parity=fp.parity,
                      horizon=setup.horizon)
            near = catalog.select(np.isin(catalog.names, fp.names[inside]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                on = apparent_positions(near, weather=weather, **kw)
                off = apparent_positions(near, weather=dict(weather, pressure_hpa=0.0), **kw)
            d = (on.x - off.x) + 1j * (on.y - off.y)
            z0 = off.x + 1j * off.y
            d = d - d.mean()
            rel = z0 - z0.mean()
            fit = np.vdot(rel, d) / np.vdot(rel, rel)  # the best similarity (scale and rotation)
            out["uncorrected_differential_mas"] = float(np.max(np.abs(d)) * 1e3)
            out["uncorrected_beyond_similarity_mas"] = float(np.max(np.abs(d - fit * rel)) * 1e3)
            out["estimate_pressure_hpa"] = weather["pressure_hpa"]
            size = (f"at zenith distance {fp.zenith_distance_deg:.2f} deg it reaches "
                    f"{out['uncorrected_differential_mas']:.3g} mas over the field relative to its centre, "
                    f"{out['uncorrected_beyond_similarity_mas']:.3g} mas beyond what the exposure's free scale "
                    "and rotation absorb (site's typical pressure)")
    out["note"] = f"refraction off: differential refraction across the field is not corrected; {size}"
    log.warning("%s: %s", source, out["note"])
    return out




def _name_index(names, wanted):
    """Indices into ``names`` of the strings ``wanted`` (all present)."""
    where = {str(n): k for k, n in enumerate(names)}
    return np.array([where[str(w)] for w in wanted], dtype=np.int64)

