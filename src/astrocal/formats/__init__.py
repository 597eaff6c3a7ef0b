"""File formats of a distortion solution, read and written exactly.

- :mod:`.astromet`: AstroMet FITS files in the layout of the XMM-Newton OM calibration
  file (sampled ``FILTER-<ID>`` offset tables, ``POLYNOM_MAP``, reverse ``POLYNOM_MAP2``,
  plate scale, uncertainty columns);
- :mod:`.sip`: FITS WCS headers with TAN-SIP;
- :mod:`.siaf`: SIAF-style coefficient tables (ECSV), as JWST's pysiaf distortion files;
- :mod:`.convert`: any format to any other (``astrocal convert``).

FITS products use 1-based pixel positions and say so in their headers; inside astrocal
positions are 0-based (``docs/conventions.md``).
"""
