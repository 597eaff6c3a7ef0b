"""FITS headers of raw lab frames: writing (for the simulator) and reading back.

:func:`make_raw_header` builds an :class:`astropy.io.fits.Header` for one raw frame of
a METIS imager with the ESO keyword names of the METIS instrument model (ScopeSim IRDB
``headers/FITS_*_keywords.yaml``, see :mod:`astrocal.instruments` for provenance):

=======================================  =================================================
keyword                                  content
=======================================  =================================================
``DATE-OBS``, ``MJD-OBS``                start of the exposure (UTC, ISO 8601 / MJD)
``EXPTIME``                              total exposure time DIT x NDIT [s]
``INSTRUME``, ``TELESCOP``, ``FILTER``   ``METIS``, ``ELT``, filter name
``HIERARCH ESO DPR CATG/TYPE/TECH``      e.g. ``CALIB`` / ``DISTORTION`` / ``IMAGE,LM``
``HIERARCH ESO INS MODE``                ``IMG_LM`` / ``IMG_N``
``HIERARCH ESO DET DIT``, ``DET NDIT``   DIT [s], NDIT (also ``DET1``/``DET2`` for LM/N)
``HIERARCH ESO DET<n> MODE``             readout mode
``HIERARCH ESO DET<n> CHIP ...``         ID, MINDIT, FULLWELL, RON, DARK, GAIN
``HIERARCH ESO DRS FILTER``              filter name (DRLD matched keyword)
``HIERARCH ESO INS OPTI10 POSNAME``      IMG_LM science filter (``OPTI13 NAME`` for IMG_N)
``HIERARCH ESO INS OPTI20 ID/POSNAME``   WCU FP2.1 mask wheel: ``wcu-fp2-1`` / position
                                         name (``grid_lm``)
``HIERARCH ESO INS OPTI20 NAME``         the mask table's name (astrocal)
``HIERARCH ESO SEQ CHOPNOD OFFSCHOP X``  chopper offset of the mask, x and y [arcsec]
``... Y``                                (astrocal split of ScopeSim's list keyword)
``HIERARCH ESO SEQ WCU LAMP NAME``       WCU lamp: ``bb``, ``laser`` or ``off``
``HIERARCH ESO SEQ WCU_BB_TEMP``         black-body temperature [K]
``HIERARCH ESO INS WCU_BB SOURCETEMP``   black-body temperature [C]
=======================================  =================================================

:func:`read_exposure_meta` reads a header (or a FITS file) back into an
:class:`ExposureMeta`; a missing required keyword raises :class:`HeaderError` naming the
file and the keyword.

:class:`HeaderRules` reads the frames of *any* imager (raw, background and flat frames
alike; the measure stage's rule): an instrument's keyword map
(:class:`astrocal.instruments.HeaderKeywords`: the preset's, then the generic FITS set,
with the campaign's ``[instrument.header_keywords]`` replacing entries) and the values a
header does not give (the campaign's ``[instrument] gain_e_per_adu``, ``read_noise_e``,
``exptime_s``, then the preset's readout mode).  What neither gives is refused with a
:class:`HeaderError` naming the file, the keywords looked for and the campaign key that
would supply it.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.time import Time

from ..errors import AstrocalError
from ..instruments import INSTRUMENTS, HeaderKeywords, Instrument, get_instrument, header_keywords

__all__ = ["ExposureMeta", "HeaderError", "HeaderRules", "eso_key", "make_raw_header",
           "read_exposure_meta"]


class HeaderError(AstrocalError, ValueError):
    """A raw-frame header lacks a keyword or has a bad value (message names both)."""


def eso_key(dotted: str) -> str:
    """The FITS keyword of a dotted ESO name.

    Parameters
    ----------
    dotted : str
        E.g. ``"INS.OPTI20.POSNAME"``.

    Returns
    -------
    str
        E.g. ``"HIERARCH ESO INS OPTI20 POSNAME"``.
    """
    return "HIERARCH ESO " + dotted.replace(".", " ")


def set_card(header: fits.Header, key: str, value: Any, comment: str = "") -> None:
    """Set a card, shortening the comment so that the card fits in 80 characters.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The header (changed in place).
    key : str
        The keyword.
    value : object
        A value FITS can hold.
    comment : str
        The card's comment (cut to the room left; left out if there is none).
    """
    card = fits.Card(key, value)
    room = 80 - len(card.image.rstrip()) - 3
    if comment and room > 0:
        header[key] = (value, comment[:room])
    else:
        header[key] = value


@dataclass(frozen=True)
class ExposureMeta:
    """Metadata of one raw frame, read from its header.

    Attributes: ``instrument`` (registry key, e.g. ``"metis-lm"``), ``date_obs``
    (:class:`astropy.time.Time`, UTC), ``dit`` (Quantity, s), ``ndit``, ``exptime``
    (Quantity, s, total), ``filter``, ``mask`` (mask-wheel position name or ``None``),
    ``mask_name`` (mask table name or ``None``), ``chopper_offset`` (Quantity arcsec,
    shape (2,), or ``None``), ``detector_mode``, ``gain_e_per_adu``, ``read_noise_e``
    (``None`` if absent), ``dpr_catg``, ``dpr_type``, ``lamp``, ``bb_temp`` (Quantity K
    or ``None``), ``source`` (file name or ``"<header>"``), ``provenance`` (where each
    value read by :class:`HeaderRules` came from: ``{"gain": "header 'EGAIN'", ...}``).
    """

    instrument: str
    date_obs: Time
    dit: u.Quantity
    ndit: int
    exptime: u.Quantity
    filter: str
    mask: str | None
    mask_name: str | None
    chopper_offset: u.Quantity | None
    detector_mode: str | None
    gain_e_per_adu: float | None
    read_noise_e: float | None
    dpr_catg: str | None
    dpr_type: str | None
    lamp: str | None
    bb_temp: u.Quantity | None
    source: str = "<header>"
    provenance: dict = field(default_factory=dict, compare=False)


def _mask_names(mask):
    """(wheel position name, table name) from a Mask, a string or None."""
    if mask is None:
        return None, None
    if isinstance(mask, str):
        return mask, None
    meta = getattr(mask, "meta", {}) or {}
    return str(meta.get("wcu_fpmask_name", getattr(mask, "short_name", "grid_lm"))), str(
        getattr(mask, "short_name", getattr(mask, "name", "")))


def make_raw_header(instrument: str | Instrument, *, date_obs: str | datetime.datetime | Time,
                    dit: float | u.Quantity, ndit: int = 1, filter_name: str | None = None,
                    mask: Any = None, chopper_offset: u.Quantity | tuple[float, float] | None = None,
                    detector_mode: str | None = None, dpr_catg: str = "CALIB",
                    dpr_type: str = "DISTORTION", lamp: str = "bb",
                    bb_temp: u.Quantity | float | None = 1000 * u.K,
                    extra: dict | None = None) -> fits.Header:
    """Header of a raw lab frame.

    Parameters
    ----------
    instrument : str or Instrument
        ``"metis-lm"``, ``"metis-n"`` (see :func:`astrocal.instruments.get_instrument`).
    date_obs : str, datetime or Time
        Start of the exposure (UTC).
    dit : float or Quantity
        Detector integration time (s); ``EXPTIME`` = ``dit * ndit``.
    ndit : int
        Number of integrations (>= 1).
    filter_name : str, optional
        Default: the instrument's default filter.
    mask : Mask or str, optional
        The WCU focal-plane mask in the beam: a :class:`~astrocal.lab.mask.Mask` (its
        ``wcu_fpmask_name`` becomes the wheel position, its short name ``OPTI20 NAME``)
        or a wheel position name (``"grid_lm"``); ``None`` for no mask keywords (typed
        ``Any``: the image package does not import the lab package, which imports it).
    chopper_offset : Quantity (2,), optional
        Offset of the mask image commanded with the chopper, (x, y) angle; plain floats
        are arcsec.
    detector_mode : str, optional
        Readout mode (default the detector's default); its gain, read noise, dark
        current, full well and minimum DIT go to the ``DET<n> CHIP`` keywords.
    dpr_catg, dpr_type : str
        ``DPR.CATG`` / ``DPR.TYPE`` (e.g. ``"CALIB"`` / ``"DISTORTION"``; use e.g.
        ``"WCU_OFF"`` for the background frame).
    lamp : str
        WCU lamp (``"bb"``, ``"laser"``, ``"off"``; ``"off"`` for a closed shutter).
    bb_temp : Quantity or float, optional
        Black-body temperature (K).
    extra : dict, optional
        More cards, ``{key: value}`` or ``{key: (value, comment)}``; dotted ESO names
        (``"SEQ.FOO"``) are expanded with :func:`eso_key`.

    Returns
    -------
    astropy.io.fits.Header
        The raw frame's primary header.
    """
    inst = get_instrument(instrument) if isinstance(instrument, str) else instrument
    if not isinstance(inst, Instrument):
        raise TypeError(f"instrument must be a registry key or an Instrument, got {instrument!r}")
    kw = inst.keywords
    mode = inst.detector.mode(detector_mode)
    filt = inst.filter(filter_name).name if filter_name is None or filter_name in inst.filters else str(filter_name)
    t = Time(date_obs, scale="utc")
    dit_s = float(u.Quantity(dit, u.s).value) if isinstance(dit, u.Quantity) else float(dit)
    ndit = int(ndit)
    if dit_s <= 0 or ndit < 1:
        raise ValueError(f"need dit > 0 and ndit >= 1, got dit={dit!r}, ndit={ndit!r}")

    h = fits.Header()
    set_card(h, "DATE-OBS", t.isot, "start of exposure (UTC)")
    set_card(h, "MJD-OBS", float(t.mjd), "start of exposure (MJD, UTC)")
    set_card(h, "EXPTIME", dit_s * ndit, "[s] total integration time DIT x NDIT")
    set_card(h, "INSTRUME", "METIS", "instrument")
    set_card(h, "TELESCOP", "ELT", "telescope")
    set_card(h, "FILTER", filt, "filter name")
    set_card(h, eso_key("DPR.CATG"), dpr_catg, "data category")
    set_card(h, eso_key("DPR.TYPE"), dpr_type, "data type")
    set_card(h, eso_key("DPR.TECH"), kw.dpr_tech, "observation technique")
    set_card(h, eso_key("INS.MODE"), kw.ins_mode, "instrument mode")
    set_card(h, eso_key(kw.dit), dit_s, "[s] detector integration time")
    set_card(h, eso_key(kw.ndit), ndit, "number of DITs")
    det = kw.det_prefix
    set_card(h, eso_key(f"{det}.DIT"), dit_s, "[s] detector integration time")
    set_card(h, eso_key(f"{det}.NDIT"), ndit, "number of DITs")
    set_card(h, eso_key(f"{det}.MODE"), mode.name, "readout mode")
    set_card(h, eso_key(f"{det}.CHIP.ID"), inst.detector.name, "detector")
    set_card(h, eso_key(f"{det}.CHIP.MINDIT"), mode.min_dit_s, "[s] minimum DIT")
    set_card(h, eso_key(f"{det}.CHIP.FULLWELL"), mode.full_well_e, "[e] full well")
    set_card(h, eso_key(f"{det}.CHIP.RON"), mode.read_noise_e, "[e] read noise")
    set_card(h, eso_key(f"{det}.CHIP.DARK"), mode.dark_current_e_per_s, "[e/s] dark current")
    set_card(h, eso_key(f"{det}.CHIP.GAIN"), mode.gain_e_per_adu, "[e/ADU] gain")
    set_card(h, eso_key(kw.drs_filter), filt, "filter")
    set_card(h, eso_key(kw.filter), filt, "science filter wheel")
    pos, name = _mask_names(mask)
    if pos is not None:
        set_card(h, eso_key(kw.mask_wheel_id), "wcu-fp2-1", "WCU FP2.1 mask wheel")
        set_card(h, eso_key(kw.mask_wheel), pos, "WCU focal-plane mask")
        if name:
            set_card(h, eso_key(kw.mask_wheel.rsplit(".", 1)[0] + ".NAME"), name, "mask table")
    if chopper_offset is not None:
        off = u.Quantity(chopper_offset, u.arcsec) if not isinstance(chopper_offset, u.Quantity) \
            else chopper_offset.to(u.arcsec)
        off = np.broadcast_to(off.value, (2,))
        set_card(h, eso_key(kw.chop_x), float(off[0]), "[arcsec] chopper offset x")
        set_card(h, eso_key(kw.chop_y), float(off[1]), "[arcsec] chopper offset y")
    set_card(h, eso_key("SEQ.WCU.LAMP.NAME"), str(lamp), "WCU lamp")
    if bb_temp is not None:
        tk = float(u.Quantity(bb_temp, u.K).value) if not isinstance(bb_temp, u.Quantity) \
            else float(bb_temp.to_value(u.K, equivalencies=u.temperature()))
        set_card(h, eso_key("SEQ.WCU_BB_TEMP"), tk, "[K] WCU black-body temperature")
        set_card(h, eso_key("INS.WCU_BB.SOURCETEMP"), round(tk - 273.15, 3), "[C] black-body temperature")
    for key, value in (extra or {}).items():
        k = eso_key(key) if "." in key and not key.startswith("HIERARCH") else key
        if isinstance(value, tuple):
            set_card(h, k, value[0], value[1])
        else:
            set_card(h, k, value)
    return h


def _instrument_from_mode(mode: str) -> str | None:
    for key, inst in INSTRUMENTS.items():
        if inst.keywords.ins_mode == mode:
            return key
    return None


def read_exposure_meta(source: str | os.PathLike | fits.HDUList | fits.Header,
                       hdu: int | str = 0) -> ExposureMeta:
    """Read the exposure metadata of a raw frame.

    Required keywords: ``DATE-OBS``, ``HIERARCH ESO INS MODE``,
    ``HIERARCH ESO DET NDIT``, ``HIERARCH ESO DET DIT`` (or ``EXPTIME``) and a filter
    (``HIERARCH ESO DRS FILTER`` or ``FILTER``).  Optional: mask, chopper offset (both or
    neither of x, y), detector mode, gain and read noise, DPR, lamp, black-body
    temperature.

    Parameters
    ----------
    source : str or os.PathLike or astropy.io.fits.HDUList or astropy.io.fits.Header
        A FITS file path, an ``HDUList`` or a ``Header``.
    hdu : int or str
        The extension of a file or HDUList.

    Returns
    -------
    ExposureMeta
        The metadata; ``source`` the file name (``"<header>"`` for a header).

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    HeaderError
        Naming the file and the keyword.
    """
    if isinstance(source, fits.Header):
        header, name = source, "<header>"
    elif isinstance(source, fits.HDUList):
        header, name = source[hdu].header, getattr(source, "filename", lambda: None)() or "<HDUList>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"raw frame not found: {path}")
        header, name = fits.getheader(path, ext=hdu), str(path)

    def need(key):
        if key not in header:
            raise HeaderError(f"{name}: missing keyword '{key}'")
        return header[key]

    def opt(key, default=None):
        return header[key] if key in header else default

    mode_key = eso_key("INS.MODE")
    ins_mode = str(need(mode_key))
    inst_key = _instrument_from_mode(ins_mode)
    if inst_key is None:
        raise HeaderError(f"{name}: keyword '{mode_key}' = {ins_mode!r} is not a known instrument mode "
                          f"({sorted(i.keywords.ins_mode for i in INSTRUMENTS.values())})")
    kw = INSTRUMENTS[inst_key].keywords
    date_raw = need("DATE-OBS")
    try:
        date_obs = Time(date_raw, scale="utc")
    except ValueError as exc:
        raise HeaderError(f"{name}: keyword 'DATE-OBS' = {date_raw!r} is not a date") from exc
    dit_key, ndit_key = eso_key(kw.dit), eso_key(kw.ndit)
    ndit = int(need(ndit_key))
    if dit_key in header:
        dit = float(header[dit_key])
    elif "EXPTIME" in header:
        dit = float(header["EXPTIME"]) / ndit
    else:
        raise HeaderError(f"{name}: missing keyword '{dit_key}' (and no 'EXPTIME')")
    exptime = float(opt("EXPTIME", dit * ndit))
    filt = opt(eso_key(kw.drs_filter), opt("FILTER"))
    if filt is None:
        raise HeaderError(f"{name}: missing keyword '{eso_key(kw.drs_filter)}' (or 'FILTER')")
    cx, cy = opt(eso_key(kw.chop_x)), opt(eso_key(kw.chop_y))
    if (cx is None) != (cy is None):
        missing = eso_key(kw.chop_y) if cy is None else eso_key(kw.chop_x)
        raise HeaderError(f"{name}: missing keyword '{missing}' (the other chopper offset is present)")
    chop = None if cx is None else u.Quantity([float(cx), float(cy)], u.arcsec)
    det = kw.det_prefix
    gain = opt(eso_key(f"{det}.CHIP.GAIN"))
    ron = opt(eso_key(f"{det}.CHIP.RON"))
    bb = opt(eso_key("SEQ.WCU_BB_TEMP"))
    return ExposureMeta(
        instrument=inst_key,
        date_obs=date_obs,
        dit=dit * u.s,
        ndit=ndit,
        exptime=exptime * u.s,
        filter=str(filt),
        mask=opt(eso_key(kw.mask_wheel)),
        mask_name=opt(eso_key(kw.mask_wheel.rsplit(".", 1)[0] + ".NAME")),
        chopper_offset=chop,
        detector_mode=opt(eso_key(f"{det}.MODE")),
        gain_e_per_adu=None if gain is None else float(gain),
        read_noise_e=None if ron is None else float(ron),
        dpr_catg=opt(eso_key("DPR.CATG")),
        dpr_type=opt(eso_key("DPR.TYPE")),
        lamp=opt(eso_key("SEQ.WCU.LAMP.NAME")),
        bb_temp=None if bb is None else float(bb) * u.K,
        source=name,
    )


# =========================================================================== any imager
#: the campaign's ``[instrument]`` key that supplies each value a header may lack
DEFAULT_KEYS = {"gain": "gain_e_per_adu", "read_noise": "read_noise_e", "exptime": "exptime_s"}


def _header_lookup(header, keywords, src, prov):
    """``(find, number)`` for a header: ``find(entry)`` gives the first of the entry's
    keywords in the header and its value (or ``(None, None)``); ``number(entry, kind)``
    its value as a finite ``kind`` (None if absent; :class:`HeaderError` naming the
    keyword otherwise), recording in ``prov`` where it came from."""
    def find(entry):
        for name in getattr(keywords, entry):
            if name in header:
                return name, header[name]
        return None, None

    def number(entry, kind=float):
        name, value = find(entry)
        if name is None:
            return None
        try:
            out = kind(value)
            if kind is int and out != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise HeaderError(f"{src}: keyword '{name}' ({entry}) = {value!r} is not "
                              f"{'an integer' if kind is int else 'a number'}") from None
        if not np.isfinite(out):
            raise HeaderError(f"{src}: keyword '{name}' ({entry}) = {value!r} is not finite")
        prov[entry] = f"header '{name}'"
        return out

    return find, number


@dataclass(frozen=True)
class HeaderRules:
    """How the frames of one imager are read: raw, background and flat frames alike.

    ``keywords``: the keyword map (:func:`astrocal.instruments.header_keywords`: the
    preset's, then the generic FITS set, with the campaign's entries replacing theirs);
    ``instrument``: the preset (registry key) whose readout mode supplies a gain and read
    noise the header and the campaign lack, or None; ``gain_e_per_adu``,
    ``read_noise_e``, ``exptime_s``: the campaign's values for what a header does not
    give (None: not given); ``mapped``: the entries the campaign's
    ``[instrument.header_keywords]`` named (for the messages).

    Order for each value: the header's keywords, then the campaign's value, then (gain and
    read noise) the preset's readout mode; else :class:`HeaderError` naming the file,
    the keywords looked for and the campaign keys that would supply it.
    """

    keywords: HeaderKeywords = field(default_factory=HeaderKeywords)
    instrument: str | None = None
    gain_e_per_adu: float | None = None
    read_noise_e: float | None = None
    exptime_s: float | None = None
    mapped: tuple = ()

    @classmethod
    def for_instrument(cls, preset: str | None = None, mapping: Mapping | None = None, *,
                       gain_e_per_adu: float | None = None, read_noise_e: float | None = None,
                       exptime_s: float | None = None) -> HeaderRules:
        """Rules for a preset and a user keyword mapping.

        Parameters
        ----------
        preset : str or None
            Instrument registry key, or None: a generic imager.
        mapping : Mapping or None
            ``{entry: keyword or [keywords]}``; an unknown entry raises ``KeyError``
            listing the valid ones.
        gain_e_per_adu, read_noise_e, exptime_s : float or None
            The campaign's values for what a header does not give (None: not given).

        Returns
        -------
        HeaderRules
        """
        return cls(header_keywords(preset, mapping), preset, gain_e_per_adu, read_noise_e,
                   exptime_s, tuple(mapping or ()))

    @classmethod
    def from_campaign(cls, spec: Any) -> HeaderRules:
        """Rules of a campaign's instrument section.

        Parameters
        ----------
        spec : astrocal.campaign.InstrumentSpec
            Its ``preset`` and, if present, ``header_keywords``, ``gain_e_per_adu``,
            ``read_noise_e`` and ``exptime_s`` are used (typed ``Any``: the image package
            does not import the campaign, which imports it).

        Returns
        -------
        HeaderRules
        """
        return cls.for_instrument(spec.preset, getattr(spec, "header_keywords", None),
                                  gain_e_per_adu=getattr(spec, "gain_e_per_adu", None),
                                  read_noise_e=getattr(spec, "read_noise_e", None),
                                  exptime_s=getattr(spec, "exptime_s", None))

    # ------------------------------------------------------------------ messages
    def _looked_for(self, entry):
        names = getattr(self.keywords, entry)
        where = " (campaign instrument.header_keywords." + entry + ")" if entry in self.mapped else ""
        if not names:
            return f"no header keyword for '{entry}'"
        return f"none of the keywords {', '.join(repr(n) for n in names)} ({entry}{where})"

    def _supply(self, entry, alt=None):
        keys = f'[instrument.header_keywords] {entry} = "<keyword>"'
        if alt:
            keys += f' (or {alt} = "<keyword>")'
        default = DEFAULT_KEYS.get(entry)
        return f"name the header keyword with {keys}" + (f", or set [instrument] {default}" if default else "")

    # ------------------------------------------------------------------ reading
    def read(self, header: fits.Header, source: str | os.PathLike = "<header>") -> ExposureMeta:
        """The exposure metadata of a frame's header.

        Parameters
        ----------
        header : astropy.io.fits.Header
            The frame's header.
        source : str or os.PathLike
            Names the file in messages and in :attr:`ExposureMeta.source`.

        Returns
        -------
        ExposureMeta
            ``instrument`` is the preset; ``dpr_*``, ``lamp``, ``bb_temp`` are None
            (METIS-only: :func:`read_exposure_meta`); ``provenance`` says where each value
            came from.

        Raises
        ------
        HeaderError
            Naming the file, the keywords looked for and the campaign keys that would
            supply a missing value.
        """
        src = str(source)
        prov = {}
        find, number = _header_lookup(header, self.keywords, src, prov)
        ndit, dit, exptime = self._exposure_times(find, number, src, prov)

        mode_key, mode = find("detector_mode")
        if mode_key is not None:
            prov["detector_mode"] = f"header '{mode_key}'"
        values = self._readout(number, mode, src, prov)

        date_key, date_raw = find("date_obs")
        date_obs = None
        if date_key is not None:
            try:
                date_obs = Time(date_raw, scale="utc")
            except ValueError:
                raise HeaderError(f"{src}: keyword '{date_key}' (date_obs) = {date_raw!r} is not "
                                  "a date") from None
            prov["date_obs"] = f"header '{date_key}'"
        cx, cy = number("chopper_x"), number("chopper_y")
        if (cx is None) != (cy is None):
            gone = "chopper_y" if cy is None else "chopper_x"
            raise HeaderError(f"{src}: {self._looked_for(gone)} in the header, while the other "
                              f"chopper offset is there; {self._supply(gone)}")
        filt = find("filter")[1]
        mask = find("mask")[1]
        mask_name = find("mask_name")[1]
        return ExposureMeta(
            instrument=self.instrument, date_obs=date_obs, dit=dit * u.s, ndit=int(ndit),
            exptime=exptime * u.s, filter=None if filt is None else str(filt),
            mask=None if mask is None else str(mask),
            mask_name=None if mask_name is None else str(mask_name),
            chopper_offset=None if cx is None else u.Quantity([cx, cy], u.arcsec),
            detector_mode=None if mode is None else str(mode),
            gain_e_per_adu=values["gain"], read_noise_e=values["read_noise"],
            dpr_catg=None, dpr_type=None, lamp=None, bb_temp=None, source=src, provenance=prov)

    def _exposure_times(self, find, number, src, prov):
        """``(ndit, dit, exptime)`` (s) from the header (either time gives the other) or
        the campaign's ``exptime_s``."""
        ndit = number("ndit", int)
        if ndit is None:
            ndit, prov["ndit"] = 1, "default 1"
        if ndit < 1:
            raise HeaderError(f"{src}: keyword '{find('ndit')[0]}' (ndit) = {ndit} must be >= 1")
        dit = number("dit")
        exptime = number("exptime")
        if dit is None and exptime is None and self.exptime_s is not None:
            exptime, prov["exptime"] = float(self.exptime_s), "campaign instrument.exptime_s"
        if dit is None and exptime is None:
            raise HeaderError(f"{src}: no exposure time: {self._looked_for('exptime')} and "
                              f"{self._looked_for('dit')} in the header; "
                              f"{self._supply('exptime', alt='dit')}")
        if dit is None:
            dit = exptime / ndit
            prov["dit"] = f"exptime / ndit ({prov['exptime']})"
        if exptime is None:
            exptime = dit * ndit
            prov["exptime"] = f"dit x ndit ({prov['dit']})"
        if not dit > 0:
            raise HeaderError(f"{src}: exposure time {dit!r} s per DIT ({prov['dit']}) must be positive")
        return ndit, dit, exptime

    def _readout(self, number, mode, src, prov):
        """``{"gain": e-/ADU, "read_noise": e-}`` from the header, else the campaign's
        values, else the preset's readout mode ``mode`` (or its default mode)."""
        readout = None
        if self.instrument is not None:
            det = get_instrument(self.instrument).detector
            try:
                readout = det.mode(None if mode is None else str(mode))
            except KeyError:
                readout = det.mode(None)
        values = {}
        for entry, default, attr in (("gain", self.gain_e_per_adu, "gain_e_per_adu"),
                                     ("read_noise", self.read_noise_e, "read_noise_e")):
            v = number(entry)
            if v is None and default is not None:
                v, prov[entry] = float(default), f"campaign instrument.{DEFAULT_KEYS[entry]}"
            if v is None and readout is not None:
                v = float(getattr(readout, attr))
                prov[entry] = f"readout mode '{readout.name}' of {self.instrument}"
            if v is None:
                what = "detector gain" if entry == "gain" else "read noise"
                raise HeaderError(f"{src}: no {what}: {self._looked_for(entry)} in the header"
                                  f"{'' if self.instrument else ' and no instrument preset'}; "
                                  f"{self._supply(entry)}")
            if (entry == "gain" and not v > 0) or (entry == "read_noise" and not v >= 0):
                raise HeaderError(f"{src}: {entry} = {v!r} ({prov[entry]}) must be "
                                  f"{'positive' if entry == 'gain' else '>= 0'}")
            values[entry] = v
        return values

    def to_dict(self) -> dict:
        """Plain description (for products' metadata).

        Returns
        -------
        dict
            ``keywords``, ``instrument``, ``gain_e_per_adu``, ``read_noise_e``,
            ``exptime_s``, ``mapped_by_campaign``.
        """
        return {"keywords": self.keywords.to_dict(), "instrument": self.instrument,
                "gain_e_per_adu": self.gain_e_per_adu, "read_noise_e": self.read_noise_e,
                "exptime_s": self.exptime_s, "mapped_by_campaign": list(self.mapped)}
