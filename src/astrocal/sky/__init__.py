"""The sky data path: reference catalogues to matched star positions.

- :mod:`.catalog`: reference catalogues (shipped extracts, astroquery look-ups);
- :mod:`.sites`: observatory sites and the weather used for refraction;
- :mod:`.astrometry`: catalogue positions to the instrument's focal plane (epoch,
  refraction, projection, rotation);
- :mod:`.starlist`: star lists that users bring;
- :mod:`.match`: matching a star list to a reference catalogue;
- :mod:`.measure`: the sky measure stage (one exposure to a matched sky table).
"""
