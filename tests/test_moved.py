"""Old import paths of moved modules (issue 20) keep working for one release, with a
DeprecationWarning that names the new path."""
import importlib

import pytest

#: old path -> new path
MOVED = {f"astrocal.lab.{m}": f"astrocal.image.{m}" for m in ("reduce", "detect", "psf", "centroid", "epsf", "headers")}


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_path_forwards_with_a_deprecation_warning(old, new):
    mod, target = importlib.import_module(old), importlib.import_module(new)
    public = [n for n in getattr(target, "__all__", []) if not n.startswith("_")]
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
