"""The keys a campaign file may hold, per table (the schema's vocabulary; each is documented
in ``docs/campaign.md``, which a test checks), and the values some keys choose from.

An unknown key is an error naming the allowed ones
(:func:`astrocal.campaign.values.check_keys`).
"""
from __future__ import annotations

INSTRUMENT_KEYS = {"name", "preset", "detector_shape", "pixel_scale_mas", "mask_scale_mm_per_arcsec",
                   "header_keywords", "gain_e_per_adu", "read_noise_e", "exptime_s"}
LAB_KEYS = {"name", "mask", "filter", "background", "flat", "flat_normalised", "exposures"}
LAB_EXPOSURE_KEYS = {"file", "offset_arcsec", "offset_sigma_mas"}
SKY_KEYS = {"name", "catalog", "site", "filter", "exposures", "background", "flat", "x_col",
            "y_col", "flux_col", "mag_col", "sigma_x_col", "sigma_y_col", "one_based", "band", "strehl"}
SKY_EXPOSURE_KEYS = {"file", "time", "ra", "dec", "position_angle_deg", "rotator_angle_deg",
                     "parity", "zenith_distance_deg", "parallactic_angle_deg", "refraction",
                     "pressure_hpa", "temperature_c", "humidity", "wavelength_um", "header",
                     "velocity_aberration_scale", "observer_velocity_km_s"}
#: exposure keys that describe the atmosphere or the horizon: refused for a space observatory
GROUND_ONLY_KEYS = ("rotator_angle_deg", "zenith_distance_deg", "parallactic_angle_deg", "refraction",
                    "pressure_hpa", "temperature_c", "humidity")
#: exposure keys of an observatory in space only (a ground site's aberration is astropy's)
SPACE_ONLY_KEYS = ("velocity_aberration_scale", "observer_velocity_km_s")
#: keys that are refused with an explanation (not an unknown-key error)
SKY_EXPOSURE_REFUSED = {
    "derotator_deg": "ambiguous: a derotator's mechanical angle is not the rotation of the "
                     "image; give rotator_angle_deg (angle of the instrument +y axis from the "
                     "direction of the zenith) or position_angle_deg (of +y, from north through "
                     "east)",
}
MEASURE_KEYS = {"output", "psf"}
FIT_KEYS = {"degree", "degree_range", "output", "walkers", "steps", "seed", "hole_errors", "mask_affine_sigma_ppm",
            "field_prior", "degree_choice", "residual", "flexure_degree", "flexure_functions", "flexure_radius_arcsec"}
FIELD_PRIORS = ("curved", "decay", "per_degree", "fixed")
DEGREE_CHOICES = ("median", "best")
RESIDUAL_CHOICES = ("none", "matern52", "auto")
EARTH_KEYS = {"iers_file", "leap_second_file", "allow_download"}
TOP_KEYS = {"instrument", "lab", "sky", "measure", "fit", "earth", "lms"}
LMS_KEYS = {"name", "mask", "mask_scale_mm_per_arcsec", "orientation", "truth_direction", "degree", "residual_m",
            "reference_detector", "offset_sigma_mas", "across_px_per_mas", "gain_e_per_adu", "read_noise_e",
            "settings", "frames", "hole_error_um", "hole_errors_from"}
LMS_ORIENTATION_KEYS = {"angle_deg", "flip", "offset_arcsec"}
LMS_SETTING_KEYS = {"lam_c_um", "order", "echelle_deg"}
LMS_FRAME_KEYS = {"file", "kind", "lam_c_um", "offset_arcsec", "lines_um", "background"}

SITE_KEYS = {"name", "latitude_deg", "longitude_deg", "height_m", "pressure_hpa", "temperature_c", "humidity"}
