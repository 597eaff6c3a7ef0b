"""FITS WCS headers with TAN-SIP for a distortion solution.

The SIP convention (Shupe et al. 2005) writes the intermediate world coordinates as
``x = CD (U + A(U))`` with ``U = p - CRPIX`` (FITS 1-based pixels) and ``A`` the
non-linear polynomial ``A_p_q``/``B_p_q`` (``2 <= p + q <= A_ORDER``); the reverse
polynomial ``AP_p_q``/``BP_p_q`` (all terms up to ``AP_ORDER``, a fit) maps ``U' = CD^-1 x`` back: ``U = U' + AP(U')``.

astrocal puts ``CRPIX`` at the solution's boresight and identifies the intermediate world
coordinates (degrees) with the focal-plane coordinates relative to the boresight's,
``x = (G(p) - G(b)) / 3600``, so ``CD`` is the field's Jacobian at the boresight and the
conversion of the forward polynomial is exact.  The reverse is fitted and its measured
round-trip error is written to ``SIPRTERR``.  The focal-plane frame is taken as the sky
frame (``CRVAL`` given by the caller); an on-sky solution rotates it beforehand.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits

from .. import __version__
from ..atomic import atomic_path
from ..errors import AstrocalError
from ..field import DistortionField, invert
from ..field.orderings import from_sip, to_sip
from ..pixels import detector_domain, from_fits, to_fits
from ..solution import Solution

DEG = 3600.0  # arcsec per degree


class SipFormatError(AstrocalError, ValueError):
    """A header lacks the keywords of a TAN-SIP solution or holds bad values."""


def sip_header(solution: Solution, crval: tuple[float, float] = (0.0, 0.0), tol: float = 1e-4) -> fits.Header:
    """A :class:`astropy.io.fits.Header` with TAN-SIP for ``solution``.

    Parameters
    ----------
    solution : Solution
        The distortion solution.
    crval : tuple of float
        The sky position of the boresight, degrees.
    tol : float
        The wanted maximum round-trip error of the reverse polynomial, pixels.

    Returns
    -------
    astropy.io.fits.Header
        The TAN-SIP header (CRPIX at the boresight, FITS 1-based; ``SIPRTERR``: the
        reverse's measured round-trip error).
    """
    field = solution.field
    b = solution.boresight
    mx, my = field.to_monomials(origin=b)
    mx, my = mx / DEG, my / DEG
    mx[0, 0] = my[0, 0] = 0.0  # intermediate coordinates relative to G(b)
    cd = np.array([[mx[1, 0], mx[0, 1]], [my[1, 0], my[0, 1]]])
    cdinv = np.linalg.inv(cd)
    nl_x, nl_y = mx.copy(), my.copy()
    for m in (nl_x, nl_y):
        m[0, 0] = m[1, 0] = m[0, 1] = 0.0
    a = cdinv[0, 0] * nl_x + cdinv[0, 1] * nl_y
    bcoef = cdinv[1, 0] * nl_x + cdinv[1, 1] * nl_y
    order = field.degree

    h = fits.Header()
    h["WCSAXES"] = 2
    sip = order >= 2
    h["CTYPE1"] = "RA---TAN-SIP" if sip else "RA---TAN"
    h["CTYPE2"] = "DEC--TAN-SIP" if sip else "DEC--TAN"
    h["CUNIT1"] = "deg"
    h["CUNIT2"] = "deg"
    h["CRPIX1"] = (float(to_fits(b[0])), "boresight x, FITS 1-based")
    h["CRPIX2"] = (float(to_fits(b[1])), "boresight y, FITS 1-based")
    h["CRVAL1"] = float(crval[0])
    h["CRVAL2"] = float(crval[1])
    for i in range(2):
        for j in range(2):
            h[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    ny, nx = solution.detector_shape
    h["IMAGEW"] = (int(nx), "detector width (pixels)")
    h["IMAGEH"] = (int(ny), "detector height (pixels)")
    h["FILTER"] = solution.filter
    h["PLTSCALE"] = (solution.plate_scale, "[arcsec/pixel] linear-grid plate scale")
    u0, v0 = solution.reference_position
    h["FPREFU"] = (u0, "[arcsec] focal-plane u of CRPIX")
    h["FPREFV"] = (v0, "[arcsec] focal-plane v of CRPIX")
    h["CREATOR"] = f"astrocal {__version__}"
    if sip:
        h["A_ORDER"] = order
        for key, value in to_sip(a, "A").items():
            h[key] = value
        h["B_ORDER"] = order
        for key, value in to_sip(bcoef, "B").items():
            h[key] = value
        ap, bp, rev_order, err = _reverse_sip(a, bcoef, b, field.domain, tol)
        h["AP_ORDER"] = rev_order
        for key, value in to_sip(ap, "AP", min_order=0).items():
            h[key] = value
        h["BP_ORDER"] = rev_order
        for key, value in to_sip(bp, "BP", min_order=0).items():
            h[key] = value
        h["SIPRTERR"] = (err, "[pixel] max round-trip error of AP/BP")
    h["COMMENT"] = "intermediate world coordinates = focal plane relative to CRPIX, deg"
    for key, value in solution.meta.items():
        h.add_history(f"{key} = {value}")
    return h


def _reverse_sip(a, b, boresight, domain, tol):
    """Fit AP/BP: ``U = U' + AP(U')`` for ``U' = U + A(U)`` over the detector."""
    one = np.zeros_like(a)
    one[1, 0] = 1.0
    eye_y = np.zeros_like(a)
    eye_y[0, 1] = 1.0
    # forward focal-plane pixels U' as a field of detector pixels p
    fwd = DistortionField.from_monomials(one + a, eye_y + b, domain, origin=boresight,
                                         unit="pixel", input_unit="pixel")
    inv = invert(fwd, tol=tol)
    rev = inv.field  # U' -> p
    ident = DistortionField.identity(rev.domain, degree=rev.degree)
    corr = rev - ident  # p - U' = b + AP(U')
    apx, apy = corr.to_monomials(origin=(0.0, 0.0))
    apx[0, 0] -= boresight[0]
    apy[0, 0] -= boresight[1]
    # the constant term is the fit's residual at CRPIX: kept (AP_0_0), since the reverse
    # is only as good as its fit and SIPRTERR states that
    return apx, apy, rev.degree, inv.max_roundtrip_error


def write_sip_header(path: str | os.PathLike, solution: Solution, crval: tuple[float, float] = (0.0, 0.0),
                     tol: float = 1e-4, overwrite: bool = False, cards: Sequence[tuple] = (),
                     history: Sequence[str] = ()) -> Path:
    """Write the TAN-SIP header of ``solution``, atomically.

    A FITS file (``.fits``: a primary HDU with no data) or, for any other name (``.hdr``,
    ``.txt``), the header as text.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    solution : Solution
        The distortion solution.
    crval : tuple of float
        The sky position of the boresight, degrees.
    tol : float
        The wanted maximum round-trip error of the reverse polynomial, pixels.
    overwrite : bool
        Replace an existing file.
    cards : sequence of (keyword, value, comment)
        Extra cards (a fit's quality flags).
    history : sequence of str
        HISTORY lines (a conversion's provenance and what it did not carry).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    header = sip_header(solution, crval=crval, tol=tol)
    for key, value, comment in cards or ():
        header[key] = (value, comment)
    for line in history or ():
        header.add_history(str(line))
    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        if path.suffix.lower() in (".fits", ".fit", ".fts"):
            fits.PrimaryHDU(header=header).writeto(tmp)
        else:
            header.totextfile(tmp)
    return path


def load_header(path: str | os.PathLike) -> fits.Header:
    """Read a header from a FITS file (primary HDU) or a text header file.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file (``.fits``, ``.fit``, ``.fts``) or a text header file.

    Returns
    -------
    astropy.io.fits.Header
        The header.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SipFormatError
        If a text file is not a FITS header.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such header file")
    if path.suffix.lower() in (".fits", ".fit", ".fts"):
        return fits.getheader(path, 0)
    try:
        return fits.Header.fromtextfile(str(path))
    except (OSError, ValueError) as exc:
        raise SipFormatError(f"{path}: not a FITS header text file ({exc})") from None


_SIP_TERM = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")


def _check_sip_orders(header, source):
    """Refuse SIP terms that ``<X>_ORDER`` does not reach (they would be ignored): a
    :class:`SipFormatError` naming the keyword and the order it needs."""
    need = {}
    for key in header.keys():
        m = _SIP_TERM.match(str(key).upper())
        if m and header[key] != 0:
            p, q = int(m.group(2)), int(m.group(3))
            prefix = m.group(1)
            if p + q > need.get(prefix, (-1, ""))[0]:
                need[prefix] = (p + q, key)
    for prefix, (deg, key) in need.items():
        okey = f"{prefix}_ORDER"
        if okey not in header:
            raise SipFormatError(f"{source}: keyword {key} is a SIP term but {okey} is missing "
                                 f"({okey} >= {deg} needed)")
        try:
            order = int(header[okey])
        except (TypeError, ValueError):
            raise SipFormatError(f"{source}: keyword {okey} = {header[okey]!r} is not an "
                                 "integer") from None
        if deg > order:
            raise SipFormatError(f"{source}: keyword {key} (order {deg}) lies beyond {okey} = "
                                 f"{order}; it would be ignored: {okey} >= {deg} needed")


def read_sip_header(header: fits.Header | str | os.PathLike, source: str = "header") -> Solution:
    """Rebuild a :class:`Solution` from a TAN(-SIP) header.

    Parameters
    ----------
    header : astropy.io.fits.Header, str or os.PathLike
        The header, or a file holding it (see :func:`load_header`).
    source : str
        The name errors give a header object (a path names itself).

    Returns
    -------
    Solution
        The solution (0-based pixels).

    Raises
    ------
    SipFormatError
        Naming the source and the missing or bad keyword.
    """
    if not isinstance(header, fits.Header):
        source = str(header)
        header = load_header(header)

    def need(key):
        if key not in header:
            raise SipFormatError(f"{source}: missing keyword {key}")
        value = header[key]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SipFormatError(f"{source}: keyword {key} = {value!r} is not a number") from None

    crpix = (float(from_fits(need("CRPIX1"))), float(from_fits(need("CRPIX2"))))
    cd = np.array([[need("CD1_1"), need("CD1_2")], [need("CD2_1"), need("CD2_2")]])
    nx = header.get("IMAGEW", header.get("NAXIS1") or header.get("DETNAXI1"))
    ny = header.get("IMAGEH", header.get("NAXIS2") or header.get("DETNAXI2"))
    if not nx or not ny:
        raise SipFormatError(f"{source}: missing keyword IMAGEW/IMAGEH (or NAXIS1/NAXIS2): "
                             "the detector size is needed for the field's domain")
    _check_sip_orders(header, source)
    try:
        order = int(header.get("A_ORDER", 1))
        if order >= 2:
            if "B_ORDER" not in header:
                raise SipFormatError(f"{source}: missing keyword B_ORDER")
            a = from_sip(header, "A", order=order)
            b = from_sip(header, "B", order=int(header["B_ORDER"]))
            n = max(a.shape[0], b.shape[0])
            a = np.pad(a, (0, n - a.shape[0]))
            b = np.pad(b, (0, n - b.shape[0]))
        else:
            a = np.zeros((2, 2))
            b = np.zeros((2, 2))
        a[1, 0] += 1.0
        b[0, 1] += 1.0
        mx = DEG * (cd[0, 0] * a + cd[0, 1] * b)
        my = DEG * (cd[1, 0] * a + cd[1, 1] * b)
        u0 = need("FPREFU") if "FPREFU" in header else 0.0
        v0 = need("FPREFV") if "FPREFV" in header else 0.0
        mx[0, 0] += u0
        my[0, 0] += v0
        domain = detector_domain((int(ny), int(nx)))
        field = DistortionField.from_monomials(mx, my, domain, origin=crpix)
        kwargs = {}
        if "PLTSCALE" in header:
            kwargs["plate_scale"] = need("PLTSCALE")
        return Solution(field, filter=str(header.get("FILTER", "")) or "NONE",
                        detector_shape=(int(ny), int(nx)), boresight=crpix,
                        meta={"source": source}, **kwargs)
    except SipFormatError:
        raise
    except (AstrocalError, TypeError, ValueError) as exc:  # a value the keywords cannot hold
        raise SipFormatError(f"{source}: {exc}") from None
