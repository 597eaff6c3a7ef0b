"""Instrument facts: detectors, scales, filters and FITS keyword names.

Small frozen dataclasses holding design values for the METIS imagers (IMG_LM, IMG_N)
and the LM integral-field spectrograph (LMS), and a registry::

    >>> from astrocal.instruments import get_instrument
    >>> lm = get_instrument("metis-lm")
    >>> lm.pixel_scale            # 5.47 mas / pix
    >>> lm.detector.mode("slow").read_noise_e

Units: plain float fields carry the unit in their name (``_mas``, ``_um``, ``_e``,
``_e_per_s``, ``_e_per_adu``, ``_arcsec_per_mm``); properties without a suffix return
astropy Quantities.

Provenance
----------
Unless stated otherwise, values come from the ScopeSim instrument reference database
**AstarVienna/irdb** (https://github.com/AstarVienna/irdb), commit
``f0a5f306900970b0faa68fc497cc1dfe5f4d4d44`` (2025-12-11), licence GPL-3.0, METIS files
by Oliver Czoske, Kieran Leschinski et al.:

* ``METIS/METIS_IMG_LM.yaml``: pixel_scale 0.00547 arcsec/pix (METIS-1097),
  plate_scale 0.30389 arcsec/mm, filter wheel names;
* ``METIS/METIS_IMG_N.yaml``: 0.00679 arcsec/pix, 0.377222222222 arcsec/mm;
* ``METIS/METIS_LMS.yaml``: 0.0082 arcsec/pix, 0.455555555556 arcsec/mm,
  fp2_platescale 0.303 arcsec/mm;
* ``METIS/FPA_metis_img_lm_layout.dat`` (E-REP-NOVA-MET-1144),
  ``FPA_metis_img_n_geosnap_layout.dat`` (E-REP-NOVA-MET-1191),
  ``FPA_metis_lms_layout.dat`` (E-REP-ATC-MET-1003): 2048x2048 pixels of 18 um;
* ``METIS/METIS_DET_IMG_LM.yaml``, ``METIS_DET_IMG_N_GeoSnap.yaml``: readout modes with
  full well, gain (e/ADU, e-mail B. Serra 2024-10-09), read noise, dark current,
  minimum DIT, reference-pixel border;
* ``METIS/headers/FITS_img_lm_keywords.yaml``, ``FITS_wcu_keywords.yaml`` (same commit)
  and, from the irdb history as stored in a public code index,
  ``METIS/headers/FITS_img_n_keywords.yaml`` (commit 50b69598ffb7),
  ``FITS_det_lm_keywords.yaml`` (37358b1f70c3), ``FITS_det_n_keywords.yaml``
  (07281bf359e8), ``FITS_common_keywords.yaml`` (34304599cd11): ESO keyword names;
* ``METIS/metis_wcu_config.yaml``: WCU focal-plane mask names, black-body default 1000 K;
* filter centres and widths from the headers of ``METIS/filters/TC_filter_<name>.dat``
  (irdb commits 2021c6d21014, 1a67bf28bc74, 2d0494cb7e18, 1ffe45dd50c6, 0ca390651fe8;
  "Roy van Boekel wish filter list, July 2018", N2 and PAH_11.25 measured curves
  E-LIS-MPIA-MET-1208).

The WCU mask plate scale 3.319 mm/arcsec is the note in ``METIS/wcu/fp_mask_grid_lm.dat``
("diam 25 um at 3.319 mm/arcsec").

**Not** in those sources, stated here as sensible assumptions (flagged ``assumed`` in
:attr:`Detector.notes`): the fractions of dead and hot pixels, the hot-pixel dark
rates, the flat-field (illumination and pixel-to-pixel) amplitudes, the cosmic-ray rate
and deposited charge, and the absorber thickness.  The IRDB default readout modes are
used (IMG_LM ``fast``, IMG_N ``high_capacity``); the lab distortion template
(10 s DIT) would more likely use IMG_LM ``slow``; choose with :meth:`Detector.mode`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping

import astropy.units as u

from .errors import AstrocalError

__all__ = [
    "ReadoutMode",
    "Detector",
    "Filter",
    "FitsKeywords",
    "HEADER_FIELDS",
    "HeaderKeywords",
    "GENERIC_HEADER_KEYWORDS",
    "Instrument",
    "InstrumentError",
    "INSTRUMENTS",
    "MASK_SCALE_MM_PER_ARCSEC",
    "get_instrument",
    "header_keywords",
    "list_instruments",
]

#: plate scale at the WCU focal-plane masks, mm per arcsec on the sky
#: (irdb METIS/wcu/fp_mask_grid_lm.dat: "diam 25 um at 3.319 mm/arcsec")
MASK_SCALE_MM_PER_ARCSEC = 3.319

IRDB_COMMIT = "f0a5f306900970b0faa68fc497cc1dfe5f4d4d44"


class InstrumentError(AstrocalError, KeyError):
    """An instrument, filter or readout mode that the registry does not know (also a
    ``KeyError``); the message names the known ones."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ReadoutMode:
    """One detector readout mode (values per DIT)."""

    name: str
    gain_e_per_adu: float
    read_noise_e: float
    dark_current_e_per_s: float
    full_well_e: float
    min_dit_s: float
    description: str = ""


@dataclass(frozen=True)
class Detector:
    """A detector (chip) with its readout modes and cosmetic-defect assumptions.

    ``shape`` is ``(ny, nx)`` as numpy gives it; ``border_px`` the reference-pixel
    border (left, right, bottom, top) that receives no light.
    """

    name: str
    technology: str
    shape: tuple[int, int]
    pixel_size_um: float
    modes: Mapping[str, ReadoutMode]
    default_mode: str
    border_px: tuple[int, int, int, int] = (0, 0, 0, 0)
    # ---- assumptions (not in the METIS sources; see module docstring) -----------
    dead_pixel_fraction: float = 1e-3
    hot_pixel_fraction: float = 5e-4
    hot_dark_range_e_per_s: tuple[float, float] = (10.0, 1000.0)
    flat_large_scale_rms: float = 0.03
    flat_pixel_rms: float = 0.01
    cosmic_ray_rate_per_cm2_s: float = 0.04
    cosmic_ray_e_per_um: float = 1000.0
    absorber_thickness_um: float = 8.0
    notes: str = ""

    def mode(self, name: str | None = None) -> ReadoutMode:
        """The readout mode ``name``.

        Parameters
        ----------
        name : str, optional
            The mode's name (default: :attr:`default_mode`).

        Returns
        -------
        ReadoutMode
            The mode.

        Raises
        ------
        InstrumentError
            The detector has no such mode.
        """
        key = self.default_mode if name is None else name
        try:
            return self.modes[key]
        except KeyError:
            raise InstrumentError(f"detector {self.name!r} has no readout mode {key!r}; "
                           f"modes: {sorted(self.modes)}") from None

    @property
    def pixel_size(self) -> u.Quantity:
        """Pixel pitch (um, a Quantity)."""
        return self.pixel_size_um * u.um

    @property
    def area_cm2(self) -> float:
        """Light-sensitive area in cm^2 (all pixels)."""
        ny, nx = self.shape
        return nx * ny * (self.pixel_size_um * 1e-4) ** 2


@dataclass(frozen=True)
class Filter:
    """A filter: name as used in the filter wheel, centre and width in micrometres."""

    name: str
    center_um: float
    width_um: float | None = None
    source: str = ""

    @property
    def center(self) -> u.Quantity:
        """Centre wavelength (um, a Quantity)."""
        return self.center_um * u.um


@dataclass(frozen=True)
class FitsKeywords:
    """ESO keyword names (dot notation, e.g. ``"INS.OPTI20.POSNAME"``) for raw frames.

    Write them as ``HIERARCH ESO INS OPTI20 POSNAME`` (see :mod:`astrocal.image.headers`).
    Keywords marked *astrocal* in :attr:`notes` are this project's convention where
    the METIS sources define none.
    """

    filter: str
    nd_filter: str
    mask_wheel: str
    mask_wheel_id: str
    det_prefix: str
    dpr_tech: str
    ins_mode: str
    dit: str = "DET.DIT"
    ndit: str = "DET.NDIT"
    drs_filter: str = "DRS.FILTER"
    chop_x: str = "SEQ.CHOPNOD.OFFSCHOP.X"
    chop_y: str = "SEQ.CHOPNOD.OFFSCHOP.Y"
    notes: str = ""


#: the entries astrocal reads from the header of a raw, background or flat frame, and
#: what each means (the fields of :class:`HeaderKeywords`, the keys of a campaign's
#: ``[instrument.header_keywords]``)
HEADER_FIELDS: Mapping[str, str] = MappingProxyType({
    "date_obs": "start of the exposure (UTC, ISO 8601)",
    "exptime": "total exposure time, s (DIT x NDIT)",
    "dit": "integration time of one DIT, s (the frame is the average of NDIT DITs)",
    "ndit": "number of DITs averaged into the frame (default 1)",
    "gain": "detector gain, e-/ADU",
    "read_noise": "read noise of one DIT, e-",
    "filter": "filter name (compared with the dataset's filter)",
    "detector_mode": "readout mode (selects the preset's gain, read noise and full well)",
    "mask": "mask-wheel position name",
    "mask_name": "mask table name (compared with the dataset's mask)",
    "chopper_x": "commanded offset of the mask image along x, arcsec",
    "chopper_y": "commanded offset of the mask image along y, arcsec",
})


def _names(value, field_name):
    """A keyword entry as a tuple of FITS keyword names (a string or a sequence of them)."""
    if isinstance(value, str):
        value = (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(f"header keyword '{field_name}': expected a keyword name or a list of "
                        f"names, got {value!r}") from None
    if not all(isinstance(v, str) and v.strip() for v in out):
        raise TypeError(f"header keyword '{field_name}': expected non-empty keyword names, got {value!r}")
    return tuple(v.strip() for v in out)


@dataclass(frozen=True)
class HeaderKeywords:
    """Where a frame's header keeps each entry of :data:`HEADER_FIELDS`: per entry the
    FITS keyword names tried in order (the first one present is used; an empty tuple:
    the header never gives it).

    The defaults are the generic FITS set (:data:`GENERIC_HEADER_KEYWORDS`); an
    instrument preset has its own map (:attr:`Instrument.header_keywords`) and falls back
    on the generic one (:meth:`then`); a campaign's ``[instrument.header_keywords]``
    replaces entries (:meth:`replace_entries`).  Keyword names are as astropy reads them
    (``"HIERARCH ESO DET DIT"`` or ``"ESO DET DIT"``; case-insensitive).
    """

    date_obs: tuple = ("DATE-OBS",)
    exptime: tuple = ("EXPTIME", "EXPOSURE")
    dit: tuple = ("DIT",)
    ndit: tuple = ("NDIT",)
    gain: tuple = ("GAIN",)
    read_noise: tuple = ("RDNOISE", "RON", "READNOIS")
    filter: tuple = ("FILTER",)
    detector_mode: tuple = ()
    mask: tuple = ()
    mask_name: tuple = ()
    chopper_x: tuple = ()
    chopper_y: tuple = ()

    def __post_init__(self):
        for name in HEADER_FIELDS:
            object.__setattr__(self, name, _names(getattr(self, name), name))

    def to_dict(self) -> dict:
        """The map as plain types, for products' metadata.

        Returns
        -------
        dict
            ``{entry: [keyword, ...]}``.
        """
        return {name: list(getattr(self, name)) for name in HEADER_FIELDS}

    def then(self, fallback: "HeaderKeywords") -> "HeaderKeywords":
        """This map with ``fallback``'s keywords tried after its own (duplicates dropped).

        Parameters
        ----------
        fallback : HeaderKeywords
            The map tried second.

        Returns
        -------
        HeaderKeywords
            The combined map.
        """
        return HeaderKeywords(**{
            name: tuple(dict.fromkeys(getattr(self, name) + getattr(fallback, name)))
            for name in HEADER_FIELDS})

    def replace_entries(self, mapping: Mapping | None) -> "HeaderKeywords":
        """A copy whose entries named in ``mapping`` are replaced.

        Parameters
        ----------
        mapping : mapping or None
            ``{entry: keyword or [keywords]}``.

        Returns
        -------
        HeaderKeywords
            The copy.

        Raises
        ------
        KeyError
            An unknown entry (the message lists the valid ones).
        TypeError
            A value that is not a keyword name (or a list of them).
        """
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - set(HEADER_FIELDS))
        if unknown:
            raise KeyError(f"unknown header entry {unknown[0]!r}; valid entries: "
                           f"{', '.join(HEADER_FIELDS)}")
        return replace(self, **{k: _names(v, k) for k, v in mapping.items()})


#: the generic FITS keyword map (every instrument falls back on it)
GENERIC_HEADER_KEYWORDS = HeaderKeywords()


def _eso(dotted: str) -> str:
    return "HIERARCH ESO " + dotted.replace(".", " ")


def _eso_header_keywords(kw: FitsKeywords) -> HeaderKeywords:
    """The keyword map of a METIS imager from its ESO keyword names."""
    det = kw.det_prefix
    return HeaderKeywords(
        date_obs=("DATE-OBS",), exptime=("EXPTIME",),
        dit=(_eso(kw.dit), _eso(f"{det}.DIT")), ndit=(_eso(kw.ndit), _eso(f"{det}.NDIT")),
        gain=(_eso(f"{det}.CHIP.GAIN"),), read_noise=(_eso(f"{det}.CHIP.RON"),),
        filter=(_eso(kw.drs_filter), _eso(kw.filter), "FILTER"),
        detector_mode=(_eso(f"{det}.MODE"),),
        mask=(_eso(kw.mask_wheel),), mask_name=(_eso(kw.mask_wheel.rsplit(".", 1)[0] + ".NAME"),),
        chopper_x=(_eso(kw.chop_x),), chopper_y=(_eso(kw.chop_y),))


@dataclass(frozen=True)
class Instrument:
    """Facts for one imager (or spectrograph detector plane).

    ``header_keywords``: where its frames' headers keep the exposure time, gain, ...
    (:class:`HeaderKeywords`; default: derived from ``keywords``, the ESO names).
    """

    key: str
    name: str
    detector: Detector
    pixel_scale_mas: float
    plate_scale_arcsec_per_mm: float
    filters: Mapping[str, Filter]
    default_filter: str
    keywords: FitsKeywords
    mask_scale_mm_per_arcsec: float = MASK_SCALE_MM_PER_ARCSEC
    n_detectors: int = 1
    notes: str = ""
    header_keywords: HeaderKeywords | None = None

    def __post_init__(self):
        if self.header_keywords is None:
            object.__setattr__(self, "header_keywords", _eso_header_keywords(self.keywords))

    @property
    def pixel_scale(self) -> u.Quantity:
        """Nominal pixel scale, mas / pix."""
        return self.pixel_scale_mas * u.mas / u.pix

    @property
    def plate_scale(self) -> u.Quantity:
        """Plate scale at the detector, arcsec / mm."""
        return self.plate_scale_arcsec_per_mm * u.arcsec / u.mm

    @property
    def mask_scale(self) -> u.Quantity:
        """Plate scale at the WCU mask plane, mm / arcsec."""
        return self.mask_scale_mm_per_arcsec * u.mm / u.arcsec

    @property
    def detector_shape(self) -> tuple[int, int]:
        """Detector shape ``(ny, nx)`` (pixels)."""
        return self.detector.shape

    @property
    def field_of_view(self) -> u.Quantity:
        """Nominal field (width_x, width_y) of one detector, arcsec."""
        ny, nx = self.detector.shape
        return [nx * self.pixel_scale_mas / 1e3, ny * self.pixel_scale_mas / 1e3] * u.arcsec

    def filter(self, name: str | None = None) -> Filter:
        """A filter of the instrument.

        Parameters
        ----------
        name : str, optional
            The filter's name (default: :attr:`default_filter`).

        Returns
        -------
        Filter
            The filter.

        Raises
        ------
        InstrumentError
            The instrument has no such filter.
        """
        key = self.default_filter if name is None else name
        try:
            return self.filters[key]
        except KeyError:
            raise InstrumentError(f"instrument {self.key!r} has no filter {key!r}; "
                           f"filters: {sorted(self.filters)}") from None

    def with_mode(self, mode: str) -> "Instrument":
        """A copy whose detector default readout mode is ``mode``.

        Parameters
        ----------
        mode : str
            A readout mode of the detector.

        Returns
        -------
        Instrument
            The copy.

        Raises
        ------
        InstrumentError
            The detector has no such mode.
        """
        self.detector.mode(mode)
        return replace(self, detector=replace(self.detector, default_mode=mode))


def _filters(*items) -> Mapping[str, Filter]:
    return MappingProxyType({f.name: f for f in items})


_RVB = "irdb METIS/filters TC_filter header (R. van Boekel wish list 2018)"
_MEAS = "irdb METIS/filters TC_filter header (measured, E-LIS-MPIA-MET-1208)"
_ASSUMED = ("assumed (not in the METIS sources): dead/hot pixel fractions, hot-pixel dark "
            "range, flat-field amplitudes, cosmic-ray rate (sea-level muon flux "
            "~0.017 /cm2/s, x~2.5 at 3000 m) and charge (~1000 e/um in HgCdTe), "
            "absorber thickness")

# ---------------------------------------------------------------------------------
# METIS IMG_LM: H2RG, irdb METIS_DET_IMG_LM.yaml / FPA_metis_img_lm_layout.dat
# ---------------------------------------------------------------------------------
_H2RG_LM = Detector(
    name="METIS IMG_LM H2RG",
    technology="Teledyne HAWAII-2RG (HgCdTe)",
    shape=(2048, 2048),
    pixel_size_um=18.0,
    modes=MappingProxyType({
        "fast": ReadoutMode("fast", gain_e_per_adu=4.0, read_noise_e=70.0,
                            dark_current_e_per_s=0.05, full_well_e=1.0e5, min_dit_s=0.04,
                            description="HAWAII2RG, fast mode"),
        "slow": ReadoutMode("slow", gain_e_per_adu=2.5, read_noise_e=15.0,
                            dark_current_e_per_s=0.05, full_well_e=1.0e5, min_dit_s=1.3,
                            description="HAWAII2RG, slow mode"),
    }),
    default_mode="fast",
    border_px=(64, 64, 64, 64),
    hot_dark_range_e_per_s=(10.0, 1000.0),
    notes=_ASSUMED,
)

# ---------------------------------------------------------------------------------
# METIS IMG_N: GeoSnap, irdb METIS_DET_IMG_N_GeoSnap.yaml
# ---------------------------------------------------------------------------------
_GEOSNAP_N = Detector(
    name="METIS IMG_N GeoSnap",
    technology="Teledyne GeoSnap-18 (HgCdTe)",
    shape=(2048, 2048),
    pixel_size_um=18.0,
    modes=MappingProxyType({
        "high_capacity": ReadoutMode("high_capacity", gain_e_per_adu=201.0, read_noise_e=300.0,
                                     dark_current_e_per_s=1.0e5, full_well_e=2.8e6,
                                     min_dit_s=0.011, description="Geosnap, high-capacity mode"),
        "low_capacity": ReadoutMode("low_capacity", gain_e_per_adu=14.0, read_noise_e=35.0,
                                    dark_current_e_per_s=1.0e5, full_well_e=1.8e5,
                                    min_dit_s=0.011, description="Geosnap, low-capacity mode"),
    }),
    default_mode="high_capacity",
    border_px=(28, 28, 28, 28),
    # hot pixels well above the (already large) nominal dark current of 1e5 e/s
    hot_dark_range_e_per_s=(3.0e5, 3.0e6),
    notes=_ASSUMED,
)

# ---------------------------------------------------------------------------------
# METIS LMS: 4 H2RG (the IFU detector plane); irdb FPA_metis_lms_layout.dat.  The
# DET yaml for the IFU is not among the copied sources: readout modes taken from the
# IMG_LM H2RG (same detector type), flagged in notes.
# ---------------------------------------------------------------------------------
_H2RG_LMS = replace(_H2RG_LM, name="METIS LMS H2RG (one of 4)", default_mode="slow",
                    notes=_ASSUMED + "; readout modes copied from the IMG_LM H2RG (METIS_DET_IFU.yaml not consulted)")

_LM_FILTERS = _filters(
    Filter("Lp", 3.796046, 0.625, _RVB),
    Filter("short-L", 3.30, 0.43, _RVB),
    Filter("Mp", 4.775038, 0.56, _RVB),
    Filter("Br_alpha", 4.05, 0.03, _RVB),
    Filter("PAH_3.3", 3.30, 0.07, _RVB),
    Filter("IB_4.05", 4.05, 0.12, _RVB),
)
_N_FILTERS = _filters(
    Filter("N1", 8.65, 1.16, _RVB),
    Filter("N2", 11.270, None, _MEAS),
    Filter("N3", 12.3, 1.4, _RVB),
    Filter("PAH_8.6", 8.60, 0.45, _RVB),
    Filter("PAH_11.25", 11.200, None, _MEAS),
    Filter("S_IV", 10.50, 0.19, _RVB),
    Filter("Ne_II", 12.82, 0.25, _RVB),
)

_KW_NOTES = ("irdb headers/*.yaml; astrocal convention: SEQ.CHOPNOD.OFFSCHOP.X/.Y split the "
             "ScopeSim list keyword SEQ.CHOPNOD.OFFSCHOP [arcsec] (FITS values are scalars)")

METIS_LM = Instrument(
    key="metis-lm",
    name="METIS IMG_LM",
    detector=_H2RG_LM,
    pixel_scale_mas=5.47,
    plate_scale_arcsec_per_mm=0.30389,
    filters=_LM_FILTERS,
    default_filter="Lp",
    keywords=FitsKeywords(
        filter="INS.OPTI10.POSNAME",      # IMG-LM science filter wheel (img-lm-fw)
        nd_filter="INS.OPTI11.POSNAME",   # IMG-LM neutral density filter wheel
        mask_wheel="INS.OPTI20.POSNAME",  # WCU FP2.1 mask wheel (wcu-fp2-1)
        mask_wheel_id="INS.OPTI20.ID",
        det_prefix="DET1",
        dpr_tech="IMAGE,LM",
        ins_mode="IMG_LM",
        notes=_KW_NOTES,
    ),
    notes="IRDB default readout mode 'fast'; lab frames with DIT ~10 s more likely 'slow'",
)

METIS_N = Instrument(
    key="metis-n",
    name="METIS IMG_N",
    detector=_GEOSNAP_N,
    pixel_scale_mas=6.79,
    plate_scale_arcsec_per_mm=0.377222222222,
    filters=_N_FILTERS,
    default_filter="N2",
    keywords=FitsKeywords(
        filter="INS.OPTI13.NAME",         # IMG-N science filter wheel (irdb uses NAME here)
        nd_filter="INS.OPTI14.NAME",
        mask_wheel="INS.OPTI20.POSNAME",
        mask_wheel_id="INS.OPTI20.ID",
        det_prefix="DET2",
        dpr_tech="IMAGE,N",
        ins_mode="IMG_N",
        notes=_KW_NOTES,
    ),
)

METIS_LMS = Instrument(
    key="metis-lms",
    name="METIS LMS",
    detector=_H2RG_LMS,
    pixel_scale_mas=8.2,
    plate_scale_arcsec_per_mm=0.455555555556,
    filters=_filters(Filter("L_spec", 3.8, None, "LMS covers 2.9-5.3 um; centre nominal"),),
    default_filter="L_spec",
    keywords=FitsKeywords(
        filter="DRS.FILTER",
        nd_filter="DRS.NDFILTER",
        mask_wheel="INS.OPTI20.POSNAME",
        mask_wheel_id="INS.OPTI20.ID",
        det_prefix="DET3",
        dpr_tech="IFU",
        ins_mode="LMS",
        notes=_KW_NOTES + "; LMS keywords not checked against FITS_lms_keywords.yaml",
    ),
    n_detectors=4,
    notes="4 H2RG at (+-19.547, +-19.547) mm; fp2_platescale 0.303 arcsec/mm; "
          "detector facts only partially sourced",
)

#: registry: key -> Instrument
INSTRUMENTS: Mapping[str, Instrument] = MappingProxyType({
    i.key: i for i in (METIS_LM, METIS_N, METIS_LMS)
})

_ALIASES = {
    "metis img_lm": "metis-lm", "img_lm": "metis-lm", "metis_img_lm": "metis-lm",
    "metis-img-lm": "metis-lm",
    "metis img_n": "metis-n", "img_n": "metis-n", "metis_img_n": "metis-n",
    "metis-img-n": "metis-n",
    "metis lms": "metis-lms", "lms": "metis-lms", "metis_lms": "metis-lms",
}


def list_instruments() -> list[str]:
    """The registry's keys.

    Returns
    -------
    list of str
        Sorted, e.g. ``['metis-lm', 'metis-lms', 'metis-n']``.
    """
    return sorted(INSTRUMENTS)


def get_instrument(name: str) -> Instrument:
    """Look up an instrument.

    Parameters
    ----------
    name : str
        A key (``"metis-lm"``, ``"metis-n"``, ``"metis-lms"``) or the campaign-file name
        (``"METIS IMG_LM"``); case-insensitive.

    Returns
    -------
    Instrument
        The registry's instrument.

    Raises
    ------
    InstrumentError
        An unknown name (the message lists the known ones).
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return INSTRUMENTS[key]
    except KeyError:
        raise InstrumentError(f"unknown instrument {name!r}; known: {list_instruments()} "
                       f"(or {sorted(i.name for i in INSTRUMENTS.values())})") from None


def header_keywords(preset: str | None = None, mapping: Mapping | None = None) -> HeaderKeywords:
    """The keyword map frames are read with.

    The preset's own map followed by the generic one (:data:`GENERIC_HEADER_KEYWORDS`
    alone without a preset), with the entries of ``mapping`` replacing the corresponding
    ones.

    Parameters
    ----------
    preset : str, optional
        The instrument preset.
    mapping : mapping, optional
        A campaign's ``[instrument.header_keywords]``: ``{entry: keyword or [keywords]}``.

    Returns
    -------
    HeaderKeywords
        The map.

    Raises
    ------
    KeyError
        An unknown preset or entry.
    """
    base = GENERIC_HEADER_KEYWORDS
    if preset is not None:
        base = get_instrument(preset).header_keywords.then(GENERIC_HEADER_KEYWORDS)
    return base.replace_entries(mapping)
