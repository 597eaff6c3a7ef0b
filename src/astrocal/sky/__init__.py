"""The sky data path: reference catalogues to matched star positions.

- :mod:`.catalog`: reference catalogues (the type, its checks, the shipped extracts);
  :mod:`.catalog_query`: astroquery look-ups through a cache; :mod:`.catalog_builders`:
  the shipped extracts made from their original files;
- :mod:`.sites`: observatory sites and the weather used for refraction;
- :mod:`.astrometry`: catalogue positions to the instrument's focal plane (epoch,
  refraction, projection, rotation);
- :mod:`.starlist`: star lists that users bring;
- :mod:`.match`: matching a star list to a reference catalogue;
- :mod:`.measure`: the sky measure stage (one exposure to a matched sky table), with
  :mod:`.exposure` (an exposure's metadata), :mod:`.stars` (its stars, from an image or a
  star list) and :mod:`.exposure_match` (predicted positions and the match).
"""
