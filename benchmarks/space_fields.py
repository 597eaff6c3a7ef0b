"""Dense star fields as a space telescope and Gaia see them, made without astrocal.

:func:`space_field` writes the two lists a user of HST or JWST brings to a match: a
detector star list (thousands of sources, 0-based pixels, instrumental magnitudes in the
imager's band) and a catalogue of the same sky (hundreds to thousands of stars, tangent-
plane offsets in arcsec, magnitudes in *another* band), and the truth: which source is
which catalogue star. Only numpy is used (no astrocal code), so a matcher is tested on data
it did not make.

The sky: stars uniform over a square ``margin`` times the detector's field, magnitudes
``m`` (the imager's band) from an exponential luminosity function ``dN/dm ~ 10**(slope m)``
and a catalogue band ``G = m + colour`` with colours ``N(colour_mean, colour_sd)`` per
star. The catalogue holds the ``n_catalog`` stars brightest in ``G`` over its footprint (the
margin included: a catalogue query is never cut to the detector), with position errors
``catalog_sigma_mas``. The list holds the ``n_sources`` stars brightest in ``m`` that fall
on the detector plus ``spurious`` random detections (cosmic rays, PSF artefacts) with
random magnitudes, each position with Gaussian noise ``noise_px``.

The detector sees a reference offset ``xi, eta`` (arcsec; ``xi`` to the east, ``eta``
north) at the pixel ``p = c + t + (1000 / (pixel_scale_mas * scale)) R(rotation) P (xi,
eta) + d(p)``: ``P = diag(parity, 1)``, ``c`` the detector centre, ``t`` the unknown
offset, ``scale`` the ratio of the true pixel scale to the nominal one (within
``scale_range``), ``rotation`` any angle, and ``d`` a smooth distortion of
``distortion_px`` at the corners (quadratic and cubic terms).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SpaceField", "space_field", "write_space_campaign", "affine_truth", "truth_over", "reference_fit",
           "CAMPAIGN"]


@dataclass
class SpaceField:
    """One field: the list, the catalogue and the truth.

    ``xy`` (N, 2) detector pixels (0-based), ``mag`` (N,) the list's magnitudes;
    ``ref`` (M, 2) catalogue offsets in arcsec, ``ref_mag`` (M,) its magnitudes (another
    band); ``truth`` (N,) the catalogue row of each source (-1: not in the catalogue,
    e.g. a spurious detection or a star too faint in G); the pose: ``scale`` (true /
    nominal pixel scale), ``rotation_deg``, ``parity``, ``offset_px``; ``shape`` (ny, nx)
    and ``pixel_scale_mas`` (nominal)."""

    xy: np.ndarray
    mag: np.ndarray
    ref: np.ndarray
    ref_mag: np.ndarray
    truth: np.ndarray
    scale: float
    rotation_deg: float
    parity: int
    offset_px: np.ndarray
    shape: tuple
    pixel_scale_mas: float

    @property
    def true_pixel_scale_mas(self) -> float:
        return self.pixel_scale_mas * self.scale


def _rot(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def space_field(rng, *, n_sources=10000, n_catalog=2000, shape=(4096, 4096), pixel_scale_mas=40.0,
                scale_range=0.05, margin=1.3, slope=0.3, colour_mean=0.6, colour_sd=0.4,
                catalog_sigma_mas=1.0, noise_px=0.03, spurious=0.02, distortion_px=2.0,
                max_offset_fraction=0.25, parity=None, rotation_deg=None, scale=None):
    """A :class:`SpaceField` (see the module notes); every unknown drawn from ``rng``."""
    ny, nx = shape
    fov = np.array([nx, ny], float) * pixel_scale_mas / 1e3  # arcsec
    half = 0.5 * margin * fov
    # enough stars that the detector holds n_sources brighter than the list's limit
    n_true = int(np.ceil(n_sources * margin ** 2 * 1.6)) + 4 * n_catalog
    sky = rng.uniform(-half, half, (n_true, 2))
    u = rng.uniform(0.0, 1.0, n_true)
    m_bright, m_faint = 14.0, 27.0
    k = slope * np.log(10.0)
    m = m_bright + np.log1p(u * np.expm1(k * (m_faint - m_bright))) / k  # exponential LF
    g = m + rng.normal(colour_mean, colour_sd, n_true)
    cat_rows = np.argsort(g, kind="stable")[:n_catalog]
    ref = sky[cat_rows] + rng.normal(0.0, catalog_sigma_mas / 1e3, (n_catalog, 2))
    ref_mag = g[cat_rows]
    in_cat = np.full(n_true, -1)
    in_cat[cat_rows] = np.arange(n_catalog)

    s = float(rng.uniform(1 - scale_range, 1 + scale_range)) if scale is None else float(scale)
    th = float(rng.uniform(0.0, 360.0)) if rotation_deg is None else float(rotation_deg)
    par = int(rng.choice([-1, 1])) if parity is None else int(parity)
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    t = rng.uniform(-max_offset_fraction, max_offset_fraction, 2) * np.array([nx, ny])
    lin = sky * [par, 1.0] @ _rot(np.radians(th)).T * (1e3 / (pixel_scale_mas * s))
    z = lin / (0.5 * np.array([nx, ny]))  # about -1..1 over the detector
    d = distortion_px / 3.0 * np.column_stack([z[:, 0] ** 2 - 0.5 * z[:, 0] * z[:, 1] + 0.8 * z[:, 1] ** 3,
                                               0.7 * z[:, 1] ** 2 + 0.6 * z[:, 0] * z[:, 1] - 0.5 * z[:, 0] ** 3])
    p = centre + t + lin + d
    on = (p[:, 0] > -0.5) & (p[:, 0] < nx - 0.5) & (p[:, 1] > -0.5) & (p[:, 1] < ny - 0.5)
    rows = np.flatnonzero(on)
    n_real = int(round(n_sources * (1 - spurious)))
    rows = rows[np.argsort(m[rows], kind="stable")[:n_real]]
    xy = p[rows] + rng.normal(0.0, noise_px, (rows.size, 2))
    mag = m[rows] + rng.normal(0.0, 0.02, rows.size)
    truth = in_cat[rows]
    n_fake = n_sources - rows.size
    if n_fake > 0:
        fake = rng.uniform([0, 0], [nx - 1, ny - 1], (n_fake, 2))
        xy = np.vstack([xy, fake])
        mag = np.concatenate([mag, rng.uniform(m[rows].min(), m[rows].max(), n_fake)])
        truth = np.concatenate([truth, np.full(n_fake, -1)])
    order = rng.permutation(len(xy))
    return SpaceField(xy=xy[order], mag=mag[order], ref=ref, ref_mag=ref_mag, truth=truth[order], scale=s,
                      rotation_deg=th, parity=par, offset_px=t, shape=(ny, nx), pixel_scale_mas=pixel_scale_mas)


# ============================================================================ a campaign
#: the HST-like campaign of :func:`write_space_campaign`
CAMPAIGN = dict(ra=201.69683, dec=-47.47958, shape=(1024, 2048), nominal_mas=39.6, true_mas=39.77,
                position_angle=118.2, vafactor=1.0000213, epoch=2019.45, catalog_epoch=2016.0)


def _inverse_gnomonic(xi, eta, ra0, dec0):
    s0, c0 = np.sin(dec0), np.cos(dec0)
    d = c0 - eta * s0
    return ra0 + np.arctan2(xi, d), np.arctan2(s0 + eta * c0, np.hypot(xi, d))


def _gnomonic(ra, dec, ra0, dec0):
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    return (np.cos(dec) * np.sin(ra - ra0) / cosc,
            (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc)


def write_space_campaign(directory, rng, *, n_sky=3000, n_catalog=250, n_list=1500, degree=2, steps=None,
                         walkers=None, no_pm_fraction=0.33, pm_sd_mas_yr=4.0, distortion_px=1.0, header=True):
    """An HST-like sky-only campaign in ``directory`` (numpy and astropy's table and FITS
    writers only): a Gaia-like catalogue (``gaia.ecsv``: ra, dec at 2016.0, proper motions
    for two thirds, ``mag_G``), an hst1pass-style list (``list.xym``: ``# x y m xe ye``,
    1-based pixels, instrumental magnitudes) of the stars at 2019.45 seen from space (the
    tangent-plane offsets divided by VAFACTOR, turned by ORIENTAT, over a true pixel scale
    0.4 % off the nominal one, a smooth distortion, noise growing with the magnitude), the
    ``_flt.fits``-like header file (DATE-OBS, TIME-OBS, EXPTIME, RA_TARG, DEC_TARG,
    ORIENTAT, VAFACTOR) and ``campaign.toml`` (``site = "hst"``; ``[fit]`` ``walkers`` and
    ``steps`` only when given, else astrocal's defaults). Returns the truth, from the
    least-squares affine pixel -> sky map ``J`` (tangent-plane arcsec, east and north) over the
    catalogue stars of the list (:func:`affine_truth`): ``on_sky_mas`` its catalogue
    (astrometric) mas per pixel, ``position_angle_deg`` the position angle (north through
    east) of its conformal part for the detector +y axis (the mean turn of both axes, which
    the distortion's local rotation moves off ORIENTAT); ``n_catalog_on_list``; and
    ``stars``: per catalogue star on the list (name ``G<k>``), its true pixel (0-based) and
    standard coordinates (arcsec), for :func:`truth_over` the stars a fit used."""
    from pathlib import Path

    from astropy.io import fits
    from astropy.table import Table
    from astropy.time import Time

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    c = CAMPAIGN
    ny, nx = c["shape"]
    ra0, dec0 = np.radians(c["ra"]), np.radians(c["dec"])
    half = 0.7 * np.array([nx, ny]) * c["true_mas"] / 1e3
    off = rng.uniform(-half, half, (n_sky, 2))  # true offsets (arcsec, east, north) at the epoch
    k = 0.3 * np.log(10.0)
    m = 16 + np.log1p(rng.uniform(0, 1, n_sky) * np.expm1(k * 10)) / k
    g = m + rng.normal(0.5, 0.4, n_sky)
    pm = rng.normal(0, pm_sd_mas_yr, (n_sky, 2))
    cat = np.argsort(g, kind="stable")[:n_catalog]
    has_pm = rng.uniform(0, 1, cat.size) >= no_pm_fraction
    dt = c["epoch"] - c["catalog_epoch"]
    pos = off[cat] - pm[cat] * dt / 1e3 + rng.normal(0, 0.3e-3, (cat.size, 2))
    ra, dec = _inverse_gnomonic(np.radians(pos[:, 0] / 3600), np.radians(pos[:, 1] / 3600), ra0, dec0)
    t = Table({"name": [f"G{j}" for j in range(cat.size)], "ra": np.degrees(ra), "dec": np.degrees(dec),
               "ra_err": np.full(cat.size, 0.3), "dec_err": np.full(cat.size, 0.3),
               "pmra": np.where(has_pm, pm[cat, 0] + rng.normal(0, 0.05, cat.size), np.nan),
               "pmdec": np.where(has_pm, pm[cat, 1] + rng.normal(0, 0.05, cat.size), np.nan),
               "pmra_err": np.where(has_pm, 0.05, np.nan), "pmdec_err": np.where(has_pm, 0.05, np.nan),
               "mag_G": g[cat]})
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("ra_err", "mas"), ("dec_err", "mas"), ("pmra", "mas/yr"),
                      ("pmdec", "mas/yr"), ("pmra_err", "mas/yr"), ("pmdec_err", "mas/yr")):
        t[col].unit = unit
    t.meta = {"epoch": c["catalog_epoch"], "frame": "icrs", "pm_dispersion_mas_yr": pm_sd_mas_yr}
    t.write(d / "gaia.ecsv", overwrite=True)
    # the detector: the true directions projected about the pointing, divided by VAFACTOR
    rt, dt_ = _inverse_gnomonic(np.radians(off[:, 0] / 3600), np.radians(off[:, 1] / 3600), ra0, dec0)
    xi, eta = _gnomonic(rt, dt_, ra0, dec0)
    xi, eta = np.degrees(xi) * 3600, np.degrees(eta) * 3600  # astrometric arcsec
    th = np.radians(c["position_angle"])
    xa = (-xi * np.cos(th) + eta * np.sin(th)) / c["vafactor"]
    ya = (xi * np.sin(th) + eta * np.cos(th)) / c["vafactor"]
    shift = rng.uniform(-40, 40, 2)
    px = (nx - 1) / 2 + shift[0] + xa * 1e3 / c["true_mas"]
    py = (ny - 1) / 2 + shift[1] + ya * 1e3 / c["true_mas"]
    zx, zy = (px - nx / 2) / (nx / 2), (py - ny / 2) / (nx / 2)
    px = px + distortion_px * (zx ** 2 - 0.3 * zx * zy)
    py = py + 0.8 * distortion_px * (zy ** 2 + 0.4 * zx * zy)
    on = (px > 1) & (px < nx - 2) & (py > 1) & (py < ny - 2)
    rows = np.flatnonzero(on)
    rows = rows[np.argsort(m[rows], kind="stable")[:n_list]]
    sig = 0.01 + 0.02 * 10 ** (0.1 * (m[rows] - m[rows].min()))
    x = px[rows] + rng.normal(0, 1, rows.size) * sig
    y = py[rows] + rng.normal(0, 1, rows.size) * sig
    lines = ["# x y m xe ye\n"] + [f"{a + 1:.4f} {b + 1:.4f} {mm - 25:.3f} {s:.4f} {s:.4f}\n"  # 1-based
                                   for a, b, mm, s in zip(x, y, m[rows] + rng.normal(0, 0.01, rows.size), sig)]
    (d / "list.xym").write_text("".join(lines))
    exptime = 400.0
    from astropy.time import TimeDelta

    start = Time(c["epoch"], format="jyear", scale="tt").utc - TimeDelta(exptime / 2, format="sec")
    iso = start.isot
    if header:
        h0 = fits.Header({"DATE-OBS": iso[:10], "TIME-OBS": iso[11:19], "EXPTIME": exptime,
                          "RA_TARG": c["ra"], "DEC_TARG": c["dec"], "INSTRUME": "WFC3"})
        h1 = fits.Header({"ORIENTAT": c["position_angle"], "VAFACTOR": c["vafactor"]})
        fits.HDUList([fits.PrimaryHDU(header=h0), fits.ImageHDU(np.zeros((2, 2), np.float32), header=h1,
                                                                name="SCI")]).writeto(d / "list_flt.fits",
                                                                                      overwrite=True)
    keys = 'header = "list_flt.fits"' if header else (
        f'time = "{Time(c["epoch"], format="jyear", scale="tt").utc.isot}", ra = {c["ra"]}, dec = {c["dec"]}, '
        f'position_angle_deg = {c["position_angle"]}, velocity_aberration_scale = {c["vafactor"]}')
    chain = "".join(f"{k} = {int(v)}\n" for k, v in (("walkers", walkers), ("steps", steps)) if v is not None)
    (d / "campaign.toml").write_text(f"""[instrument]
name = "WFC3-like"
detector_shape = [{ny}, {nx}]
pixel_scale_mas = {c['nominal_mas']}

[[sky]]
name = "hst"
catalog = "gaia.ecsv"
site = "hst"
exposures = [ {{ file = "list.xym", {keys}, parity = 1 }} ]

[measure]
output = "measured/"

[fit]
degree = {degree}
output = "out/"
{chain}seed = 1
residual = "none"
""")
    sel = rows[np.isin(rows, cat)]
    # the true pixel (0-based) and standard coordinates (arcsec) of each catalogue star on the list
    listed = set(sel.tolist())
    on_list = {f"G{j}": (float(px[i]), float(py[i]), float(xi[i]), float(eta[i]))
               for j, i in enumerate(cat) if i in listed}
    line = {int(i): k for k, i in enumerate(rows)}
    truth = affine_truth(np.array([v[0] for v in on_list.values()]), np.array([v[1] for v in on_list.values()]),
                         np.array([v[2] for v in on_list.values()]), np.array([v[3] for v in on_list.values()]))
    return {**truth, "n_catalog_on_list": int(sel.size), "nominal_position_angle_deg": c["position_angle"],
            "stars": on_list, "list_line": {f"G{j}": line[int(i)] for j, i in enumerate(cat) if i in listed},
            "error_model": {"catalog_sigma_mas": 0.3, "pm_sd_mas_yr": pm_sd_mas_yr, "degree": degree}}


def affine_truth(px, py, xi, eta, parity=1):
    """The on-sky scale and position angle of the least-squares affine map ``J`` from the
    pixels ``px, py`` to the standard coordinates ``xi, eta`` (arcsec, east, north) of a set
    of stars: ``on_sky_mas`` = ``1000 sqrt|det J|``, ``position_angle_deg`` the position angle
    (north through east) of the conformal part of ``J`` for the detector +y axis: the angle of
    the +y axis's image plus the +x axis's image turned by 90 deg (``atan2(J01 + p J10,
    J11 - p J00)``, ``p`` the parity; the campaign's is +1: detector +x to the west at angle 0)."""
    P = np.column_stack([np.ones(len(px)), px, py])
    cu = np.linalg.lstsq(P, xi, rcond=None)[0]
    cv = np.linalg.lstsq(P, eta, rcond=None)[0]
    on_sky = 1e3 * np.sqrt(abs(cu[1] * cv[2] - cu[2] * cv[1]))
    pa = np.degrees(np.arctan2(cu[2] + parity * cv[1], cv[2] - parity * cu[1])) % 360.0
    return {"on_sky_mas": float(on_sky), "position_angle_deg": float(pa)}


def truth_over(truth, names):
    """:func:`affine_truth` over the catalogue stars ``names`` (those of ``truth["stars"]``, as
    :func:`write_space_campaign` returns it; other names are left out): the truth of a fit
    whose on-sky scale and angle are taken over the stars it used. Adds ``n_stars``."""
    v = np.array([truth["stars"][n] for n in dict.fromkeys(names) if n in truth["stars"]], float).reshape(-1, 4)
    return {**affine_truth(v[:, 0], v[:, 1], v[:, 2], v[:, 3]), "n_stars": int(len(v))}


def reference_fit(directory, truth, names=None):
    """The on-sky scale and position angle as a weighted least-squares fit with the
    generator's own error model would measure them (numpy only; the reference astrocal's
    coverage is compared with): the catalogue (``gaia.ecsv``) carried to the epoch with its
    proper motions in the tangent plane about the pointing, the list (``list.xym``) rows of
    the catalogue stars ``names`` (default: all on the list), a polynomial of the campaign's
    degree from pixels to standard coordinates weighted by the true per-star variance
    (catalogue 0.3 mas, proper-motion error or, without one, the proper-motion dispersion
    times the epoch gap; the list's ``xe`` times the true pixel scale), and the scale and
    angle of its best affine part over those stars' pixels (:func:`affine_truth`, as the
    truth is taken), with their sd from the coefficients' covariance (linear propagation).
    Returns ``on_sky_mas``, ``on_sky_sd``, ``position_angle_deg``, ``position_angle_sd``,
    their pulls against :func:`truth_over` the same stars (``scale_pull``, ``pa_pull``) and
    ``n_stars``."""
    from pathlib import Path

    from astropy.table import Table

    d = Path(directory)
    c, em = CAMPAIGN, truth["error_model"]
    names = [n for n in dict.fromkeys(names if names is not None else truth["stars"]) if n in truth["list_line"]]
    cat = Table.read(d / "gaia.ecsv")
    rows = {str(n): k for k, n in enumerate(cat["name"])}
    cat = cat[[rows[n] for n in names]]
    lines = np.loadtxt(d / "list.xym", ndmin=2)[[truth["list_line"][n] for n in names]]
    x, y, xe = lines[:, 0] - 1.0, lines[:, 1] - 1.0, lines[:, 3]  # 0-based pixels
    ra0, dec0 = np.radians(c["ra"]), np.radians(c["dec"])
    a, b = _gnomonic(np.radians(np.asarray(cat["ra"], float)), np.radians(np.asarray(cat["dec"], float)), ra0, dec0)
    dt = c["epoch"] - c["catalog_epoch"]
    pmra, pmdec = np.asarray(cat["pmra"], float), np.asarray(cat["pmdec"], float)
    has = np.isfinite(pmra)
    a = np.degrees(a) * 3600 + np.where(has, pmra, 0.0) * dt / 1e3  # arcsec at the epoch
    b = np.degrees(b) * 3600 + np.where(has, pmdec, 0.0) * dt / 1e3
    pm_sd = np.where(has, np.asarray(cat["pmra_err"], float), em["pm_sd_mas_yr"])  # mas/yr per axis
    var = ((em["catalog_sigma_mas"] ** 2 + (pm_sd * dt) ** 2) / 1e6
           + (xe * c["true_mas"] / 1e3) ** 2)  # arcsec^2 per axis
    ny, nx = c["shape"]
    u, v = (x - nx / 2) / (nx / 2), (y - ny / 2) / (nx / 2)
    deg = int(em["degree"])
    design = np.column_stack([u ** i * v ** j for i in range(deg + 1) for j in range(deg + 1 - i)])
    w = 1.0 / var
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = np.concatenate([cov @ (design.T @ (w * a)), cov @ (design.T @ (w * b))])
    k = design.shape[1]

    def measure(cf):
        r = affine_truth(x, y, design @ cf[:k], design @ cf[k:])
        return np.array([r["on_sky_mas"], r["position_angle_deg"]])

    est = measure(coef)
    jac = np.empty((2, 2 * k))
    for i in range(2 * k):
        h = 1e-7 * max(abs(coef[i]), 1e-3)
        step = np.zeros(2 * k)
        step[i] = h
        jac[:, i] = (measure(coef + step) - measure(coef - step)) / (2 * h)
    full = np.zeros((2 * k, 2 * k))
    full[:k, :k] = full[k:, k:] = cov
    sd = np.sqrt(np.diag(jac @ full @ jac.T))
    t = truth_over(truth, names)
    dpa = (est[1] - t["position_angle_deg"] + 180.0) % 360.0 - 180.0
    return {"on_sky_mas": float(est[0]), "on_sky_sd": float(sd[0]), "position_angle_deg": float(est[1]),
            "position_angle_sd": float(sd[1]), "scale_pull": float((est[0] - t["on_sky_mas"]) / sd[0]),
            "pa_pull": float(dpa / sd[1]), "n_stars": int(len(names))}
