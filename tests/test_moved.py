"""Old import paths of moved modules (issue 20) keep working for one release, with a
DeprecationWarning that names the new path."""
import importlib

import pytest

#: old path -> new path
MOVED = {f"astrocal.lab.{m}": f"astrocal.image.{m}" for m in ("reduce", "detect", "psf", "centroid", "epsf", "headers")}
#: old path -> the new modules its names went to
MOVED.update({"astrocal.lab.detector": "astrocal.sim.detector", "astrocal.lms.demo": "astrocal.stages.demo_lms", "astrocal.report.cli": "astrocal.cli.report", "astrocal.correct.cli": "astrocal.cli.correct",
              "astrocal.sim.cli": "astrocal.cli.simulate"})
SPLIT = {"astrocal.model.cli": ("astrocal.stages.fit", "astrocal.stages.fit_inputs", "astrocal.cli.fit"),
         "astrocal.demo": ("astrocal.stages.demo", "astrocal.cli.demo")}
#: names that left a module which keeps the rest -> where they went
LEFT = {"astrocal.formats.convert": {"register": "astrocal.cli.convert", "run": "astrocal.cli.convert"},
        "astrocal.lab.measure": {"measure_campaign": "astrocal.stages.measure", "MeasureReport": "astrocal.stages.measure",
                                 "scatter_check": "astrocal.stages.measure", "register": "astrocal.cli.measure",
                                 "run": "astrocal.cli.measure"},
        "astrocal.model.result": {n: "astrocal.products.result_files" for n in (
            "save_fit", "load_posterior", "load_chain", "load_residuals", "summary_table", "QUANTILES")},
        "astrocal.sky.match": {n: "astrocal.sky.match_transforms"
                               for n in ("SimilarityTransform", "AffineTransform", "PolynomialTransform")},
        "astrocal.sky.measure": {"ExposureSetup": "astrocal.sky.exposure", "HEADER_KEYS": "astrocal.sky.exposure",
                                 "UNKNOWN_HORIZON": "astrocal.sky.exposure", "star_psf": "astrocal.sky.stars",
                                 "MAX_NEIGHBOUR_PAIRS": "astrocal.sky.stars",
                                 "MATCH_TOLERANCES_PX": "astrocal.sky.exposure_match"},
        "astrocal.sky.catalog": {"query_gaia": "astrocal.sky.catalog_query", "query_vizier": "astrocal.sky.catalog_query",
                                 "default_cache_dir": "astrocal.sky.catalog_query",
                                 "read_kai_photo_calib": "astrocal.sky.catalog_builders",
                                 "read_gaia_extract": "astrocal.sky.catalog_builders"},
        "astrocal.model.linear": {"JointModel": "astrocal.model.joint", "Priors": "astrocal.model.priors",
                                  "MASK_AFFINE_NAMES": "astrocal.model.priors",
                                  "mask_affine_patterns": "astrocal.model.priors",
                                  "gauge_patterns": "astrocal.model.priors"},
        "astrocal.model.inference": {"laplace_evidence": "astrocal.model.laplace",
                                     "robust_start": "astrocal.model.outliers",
                                     "noise_covariance": "astrocal.model.outliers",
                                     "weak_parameters": "astrocal.model.identifiability",
                                     "PooledPosterior": "astrocal.model.sampling",
                                     "ChainMismatchError": "astrocal.model.sampling",
                                     "chain_summary": "astrocal.model.sampling",
                                     "choose_degree": "astrocal.model.selection"},
        "astrocal.sim.lab": {"load_lab_truth": "astrocal.sim.lab_files", "WCU": "astrocal.sim.radiometry",
                             "photon_radiance": "astrocal.sim.radiometry",
                             "sphere_gain_factor": "astrocal.sim.radiometry",
                             "NOISE_EFFECTS": "astrocal.sim.lab_settings", "SCENE_EFFECTS": "astrocal.sim.lab_settings"},
        "astrocal.sim.sky_truth": {
            "SkyPlan": "astrocal.sim.sky_plan", "plan_night": "astrocal.sim.sky_plan", "FIELDS": "astrocal.sim.sky_plan",
            "field_center": "astrocal.sim.sky_plan", "SIDEREAL_RATE": "astrocal.sim.sky_plan",
            "true_catalog": "astrocal.sim.sky_catalog", "synthetic_cluster": "astrocal.sim.sky_catalog",
            "TUC47": "astrocal.sim.sky_catalog", "noisy_catalog": "astrocal.sim.sky_catalog",
            "band_magnitudes": "astrocal.sim.sky_catalog", "with_band_magnitudes": "astrocal.sim.sky_catalog",
            "catalog_errors": "astrocal.sim.sky_catalog", "make_true_catalog": "astrocal.sim.sky_catalog",
            "truth_paths": "astrocal.sim.sky_files", "write_sky_truth": "astrocal.sim.sky_files",
            "load_sky_truth": "astrocal.sim.sky_files", "sky_campaign_toml": "astrocal.sim.sky_files",
            "star_flux": "astrocal.sim.sky_points", "observe_sky_points": "astrocal.sim.sky_points",
            "write_sky_points_campaign": "astrocal.sim.sky_points", "FLAG_UNIDENTIFIED": "astrocal.sources"},
        }


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_path_forwards_with_a_deprecation_warning(old, new):
    mod, target = importlib.import_module(old), importlib.import_module(new)
    public = [n for n in getattr(target, "__all__", None) or
              [n for n, v in vars(target).items() if callable(v) and getattr(v, "__module__", None) == new]
              if not n.startswith("_")]
    assert public, new
    for name in public:
        with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}; import {name} from {new}"):
            assert getattr(mod, name) is getattr(target, name)
    with pytest.raises(AttributeError):
        getattr(mod, "no_such_name_anywhere")


def test_from_import_of_an_old_path_gives_the_same_object():
    with pytest.warns(DeprecationWarning):
        from astrocal.lab.centroid import fit_centroids as old
    from astrocal.image.centroid import fit_centroids as new
    assert old is new


@pytest.mark.parametrize("old,new", sorted(SPLIT.items()))
def test_a_split_module_forwards_each_name_to_where_it_went(old, new):
    mod = importlib.import_module(old)
    seen = 0
    for target in map(importlib.import_module, new):
        for name in [n for n in vars(target) if not n.startswith("_") and callable(getattr(target, n))
                     and getattr(getattr(target, n), "__module__", None) == target.__name__]:
            with pytest.warns(DeprecationWarning, match=rf"{old} moved to astrocal\.(stages|cli)\.\w+; import {name} "):
                assert getattr(mod, name) is getattr(target, name)
            seen += 1
    assert seen >= 5
    with pytest.raises(AttributeError, match=rf"moved to {new[0]}"):
        getattr(mod, "no_such_name_anywhere")


@pytest.mark.parametrize("old", sorted(LEFT))
def test_names_that_left_a_module_forward(old):
    mod = importlib.import_module(old)
    for name, new in LEFT[old].items():
        with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}; import {name} from {new}"):
            assert getattr(mod, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("module,old,new", [("astrocal.model.joint", "LabModel", "JointModel"),
                                            ("astrocal.model.data", "LabPoints", "Points"),
                                            ("astrocal.model.inference", "LabFit", "Fit"),
                                            ("astrocal.model.inference", "fit_lab", "fit_joint")])
def test_renamed_model_names_keep_working(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}.{old} is now {module}.{new}"):
        assert getattr(mod, old) is getattr(mod, new)
    with pytest.raises(AttributeError):
        getattr(mod, "LabSomethingElse")
