"""The LMS's relative spectral response and slit loss in the simulator: the truth and its models.

Two physical effects of :func:`astrocal.sim.lms.simulate_lms`, each switchable
(``rsrf``, ``slit_loss`` in :class:`~astrocal.sim.lms.LmsSimSettings`):

* **Relative spectral response per slice** (:class:`LmsResponseTruth`): every photon that lands in
  slice ``k`` at wavelength ``lam`` is kept with the factor

  ``r_k(lam) = g_k (1 + b_k x + c_k x^2) * blaze(lam)``,  ``x = m (lam - lam_m) / lam_m``

  with ``m`` the echelle order of the setting, ``lam_m`` the wavelength the optical model puts at
  echelle angle 0 in that order (``ic1`` of ``lms_dist_wcal.txt``; the blaze peak, an assumption:
  no source gives the blaze angle) and ``x`` the position in the order's free spectral range
  (+-0.5 at its ends). ``blaze = sinc^2(kappa x)`` (numpy ``sinc``, ``kappa`` = 0.8) is common to
  all slices; the per-slice gain ``g_k``, slope ``b_k`` and curvature ``c_k`` are drawn from
  ``N(1, sigma_gain)``, ``N(0, sigma_slope)``, ``N(0, sigma_curv)`` (slicer and re-imaging mirror
  reflectivities, vignetting that differs between slices). All numbers are assumptions made for
  the simulation; none comes from a METIS document.

* **Slit loss** (:class:`SlitProfile`): the slicer transmits the light at position ``u`` across a
  slice (``u = (eta - eta_k) / W`` in -0.5..0.5 of the slice width ``W`` = 20.7 mas) with
  ``t(u) = 1 - edge_loss * |2u|^power`` (edge scatter and diffraction losses at the slice edges;
  default 20 % at the edge, ``power`` 4). A point source's throughput into its own slice is then
  the integral of its PSF (the ELT's obscured Airy pattern, cut by the slice) times ``t``: it falls
  by ~25 % between the slice centre and its edge at 4.7 um even without the edge loss
  (:func:`point_source_throughput`).

Conventions: slices 1..28, wavelengths [um], ``u`` in slice widths (+ towards higher slice
numbers), factors dimensionless.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike

from ..lms.traces import ORDERS, N_SLICES, SLICE_WIDTH_ARCSEC, load_wcal
from . import lms_render as R

__all__ = ["SlitProfile", "LmsResponseTruth", "blaze_centre_um", "order_position", "draw_response",
           "point_source_throughput", "rsrf_truth", "slit_truth"]


def blaze_centre_um(order: ArrayLike) -> np.ndarray:
    """Wavelength at echelle angle 0 in ``order`` (``ic1`` of the optical model's wcal table).

    Parameters
    ----------
    order : array_like of int
        Echelle orders.

    Returns
    -------
    numpy.ndarray
        Wavelengths, um.
    """
    wcal = load_wcal()
    return wcal[np.asarray(order, int) - ORDERS[0], 4]


def order_position(lam_um: ArrayLike, order: int) -> np.ndarray:
    """``x = m (lam - lam_m) / lam_m``: position in the order's free spectral range.

    Parameters
    ----------
    lam_um : array_like
        Wavelengths, um.
    order : int
        The echelle order ``m``.

    Returns
    -------
    numpy.ndarray
        ``x``: 0 at the blaze centre, +-0.5 at the ends of the free spectral range.
    """
    lm = blaze_centre_um(order)
    return int(order) * (np.asarray(lam_um, float) - lm) / lm


@dataclass(frozen=True)
class SlitProfile:
    """Transmission across a slice, ``t(u) = 1 - edge_loss |2u|^power``, ``u`` in slice widths
    (-0.5..0.5 from the slice centre)."""

    edge_loss: float = 0.2
    power: float = 4.0

    def __post_init__(self):
        if not (0.0 <= self.edge_loss < 1.0) or not (self.power > 0):
            raise ValueError(f"slit profile: edge_loss must be in [0, 1) and power > 0, got {self.edge_loss}, "
                             f"{self.power}")

    def __call__(self, u):
        u = np.clip(np.abs(np.asarray(u, float)), 0.0, 0.5)
        return 1.0 - self.edge_loss * (2.0 * u) ** self.power

    def mean(self) -> float:
        """Mean of ``t`` over the slice.

        Returns
        -------
        float
            The factor an extended (slit-filling) source sees.
        """
        return 1.0 - self.edge_loss / (self.power + 1.0)


@dataclass(frozen=True)
class LmsResponseTruth:
    """Per-slice relative spectral response (see the module notes).

    Attributes
    ----------
    gain, slope, curv : ndarray (28,)
        ``g_k``, ``b_k``, ``c_k`` of slices 1..28.
    kappa : float
        Width parameter of the common blaze ``sinc^2(kappa x)`` (0: no blaze).
    """

    gain: np.ndarray = field(default_factory=lambda: np.ones(N_SLICES))
    slope: np.ndarray = field(default_factory=lambda: np.zeros(N_SLICES))
    curv: np.ndarray = field(default_factory=lambda: np.zeros(N_SLICES))
    kappa: float = 0.8

    def factor(self, slice_number: ArrayLike, lam_um: ArrayLike, order: int) -> np.ndarray:
        """``r_k(lam)``, the relative response.

        Parameters
        ----------
        slice_number : array_like of int
            Slices (1..28).
        lam_um : array_like
            Wavelengths, um.
        order : int
            The echelle order.

        Returns
        -------
        numpy.ndarray
            The response factors.
        """
        k = np.asarray(slice_number, int) - 1
        x = order_position(lam_um, order)
        g, b, c = self.gain[k], self.slope[k], self.curv[k]
        return g * (1.0 + b * x + c * x * x) * np.sinc(self.kappa * x) ** 2

    def table(self) -> Table:
        """The response as a table.

        Returns
        -------
        astropy.table.Table
            One row per slice (``slice``, ``gain``, ``slope``, ``curv``); meta ``kappa`` and
            the model.
        """
        t = Table({"slice": np.arange(1, N_SLICES + 1), "gain": self.gain, "slope": self.slope, "curv": self.curv})
        t.meta.update({"kappa": float(self.kappa),
                       "model": "r_k(lam) = gain_k (1 + slope_k x + curv_k x^2) sinc^2(kappa x), "
                                "x = m (lam - lam_m) / lam_m, lam_m = ic1 of order m (lms_dist_wcal)"})
        return t

    @classmethod
    def from_table(cls, t: Table) -> LmsResponseTruth:
        """The response of a table written by :meth:`table`.

        Parameters
        ----------
        t : astropy.table.Table
            The table.

        Returns
        -------
        LmsResponseTruth
            The response.

        Raises
        ------
        ValueError
            Unless the table has one row per slice 1..28 in order.
        """
        if list(np.asarray(t["slice"], int)) != list(range(1, N_SLICES + 1)):
            raise ValueError("response truth table: needs one row per slice 1..28 in order")
        return cls(np.asarray(t["gain"], float), np.asarray(t["slope"], float), np.asarray(t["curv"], float),
                   float(t.meta.get("kappa", 0.8)))


def draw_response(rng: np.random.Generator, sigma_gain: float = 0.05, sigma_slope: float = 0.05,
                  sigma_curv: float = 0.03, kappa: float = 0.8) -> LmsResponseTruth:
    """A per-slice response with ``g ~ N(1, sigma_gain)``, ``b ~ N(0, sigma_slope)``,
    ``c ~ N(0, sigma_curv)`` (one ``rng.normal`` call of shape (3, 28)).

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    sigma_gain, sigma_slope, sigma_curv : float
        Rms of the gains, slopes and curvatures.
    kappa : float
        Width parameter of the common blaze.

    Returns
    -------
    LmsResponseTruth
        The response.
    """
    z = rng.normal(0.0, 1.0, (3, N_SLICES))
    return LmsResponseTruth(1.0 + sigma_gain * z[0], sigma_slope * z[1], sigma_curv * z[2], float(kappa))


def point_source_throughput(u: ArrayLike, lam_um: float, profile: SlitProfile | None = None, *,
                            n_eta: int | None = None) -> np.ndarray:
    """Fraction of a point source's light that its own slice passes.

    For a source at ``u`` slice widths from the slice centre: the ELT PSF (as
    :mod:`astrocal.sim.lms_render` samples it, out to 3.5 lambda/D, normalised over the
    whole plane) integrated over the slice times the slit profile ``t``, with the renderer's
    samples. The slice ends are not included (a source far from them).

    Parameters
    ----------
    u : array_like
        Source positions across the slice, slice widths from its centre.
    lam_um : float
        Wavelength, um.
    profile : SlitProfile, optional
        The slit profile (default: uniform transmission).
    n_eta : int, optional
        Across-slice cells (default the renderer's).

    Returns
    -------
    numpy.ndarray
        The fractions, one per ``u``.
    """
    u = np.atleast_1d(np.asarray(u, float))
    lam = float(lam_um)
    ec = R.eta_cells() if n_eta is None else ((np.arange(n_eta) + 0.5) / n_eta - 0.5) * SLICE_WIDTH_ARCSEC
    dxi = R.xi_offsets(lam)
    cell = (R.XI_STEP_PX * R.PX_ARCSEC) * (SLICE_WIDTH_ARCSEC / len(ec))
    tr = np.ones(len(ec)) if profile is None else profile(ec / SLICE_WIDTH_ARCSEC)
    out = np.empty(u.size)
    for i, ui in enumerate(u):
        deta = ec[None, :] - ui * SLICE_WIDTH_ARCSEC
        w = R.psf_weights(dxi[:, None], deta, lam, cell)
        out[i] = float((w * tr[None, :]).sum())
    return out


def rsrf_truth(table: Table, response: LmsResponseTruth, order: int) -> dict:
    """The truth of an RSRF table (:func:`astrocal.lms.response.estimate_rsrf`) from the simulated
    response.

    Parameters
    ----------
    table : astropy.table.Table
        The RSRF table (``SLICE``, ``LAM``, ``LAM_LO``, ``REL_SLICE``).
    response : LmsResponseTruth
        The simulated response.
    order : int
        The echelle order.

    Returns
    -------
    dict
        ``rsrf`` (the response at each row's ``LAM``, normalised to mean 1 over the rows, as
        the estimate is) and ``rel_slice`` (each slice over the mean of the slices at the
        same bin, NaN where the table's ``REL_SLICE`` is).
    """
    sl = np.asarray(table["SLICE"], int)
    r = response.factor(sl, np.asarray(table["LAM"], float), order)
    rsrf = r / r.mean()
    rel = np.full(len(table), np.nan)
    lo = np.asarray(table["LAM_LO"], float)
    for b in np.unique(lo):
        m = lo == b
        rel[m] = r[m] / r[m].mean()
    rel[~np.isfinite(np.asarray(table["REL_SLICE"], float))] = np.nan
    return {"rsrf": rsrf, "rel_slice": rel}


def slit_truth(table: Table, spots: Table, exposures: Table, *, reference_tolerance: float = 0.05,
               edge_margin_arcsec: float = 0.1) -> np.ndarray:
    """The truth of a slit-throughput table (:func:`astrocal.lms.response.estimate_slit_throughput`)
    from a simulated campaign's ``truth/spots.ecsv`` and ``truth/exposures.ecsv``: per row the
    mean true throughput (``throughput``: main image flux over the pinhole's, the response divided
    out) of the spots of that line at the commanded position ``U`` over that of the centred ones,
    at the true chopper offsets. Spots within ``edge_margin_arcsec`` of a slice end are left out
    (the estimate leaves them out too).

    Parameters
    ----------
    table : astropy.table.Table
        The slit-throughput table (``SETTING``, ``LINE``, ``U``).
    spots : astropy.table.Table
        The campaign's ``truth/spots.ecsv``.
    exposures : astropy.table.Table
        The campaign's ``truth/exposures.ecsv``.
    reference_tolerance : float
        Spots within this of the slice centre (slice widths) are the centred ones.
    edge_margin_arcsec : float
        Margin to the slice ends, arcsec.

    Returns
    -------
    numpy.ndarray
        The true relative throughput per row (NaN where no spot gives it).
    """
    sp = spots[np.asarray(spots["main"], bool)
               & (np.abs(np.asarray(spots["xi_arcsec"], float)) <= 0.4485 - edge_margin_arcsec)]
    ex = {str(f): (a, b) for f, a, b in zip(exposures["file"], exposures["offset_cmd_b"], exposures["offset_true_b"])}
    shift = np.array([(ex[str(f)][1] - ex[str(f)][0]) / SLICE_WIDTH_ARCSEC for f in sp["file"]])
    u_cmd = np.asarray(sp["u_true"], float) - shift
    lam = np.asarray(sp["lam_um"], float)
    setting = np.asarray(sp["setting"], int)
    thr = np.asarray(sp["throughput"], float)
    out = np.full(len(table), np.nan)
    for i, row in enumerate(table):
        m = (setting == int(row["SETTING"])) & np.isclose(lam, float(row["LINE"]), rtol=0, atol=1e-9)
        at = m & np.isclose(u_cmd, float(row["U"]), rtol=0, atol=1e-3)
        ref = m & (np.abs(u_cmd) <= reference_tolerance)
        if at.any() and ref.any():
            out[i] = thr[at].mean() / thr[ref].mean()
    return out
