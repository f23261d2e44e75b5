"""The public API is what ``bertserve.__all__`` says; an accidental change fails here."""

import bertserve


def test_all_names_exist_and_are_exported() -> None:
    exported = {n for n in dir(bertserve) if not n.startswith("_") or n == "__version__"}
    assert set(bertserve.__all__) <= exported
    assert {"Encoder", "Manifest", "BertserveError", "load_manifest", "__version__"} <= set(bertserve.__all__)


def test_error_tree_maps_to_statuses() -> None:
    assert issubclass(bertserve.UnsafeWeightsError, bertserve.ArtifactError)
    assert issubclass(bertserve.TextTooLongError, bertserve.InputError)
    assert bertserve.InputError.status_code == 422
    assert bertserve.OverloadedError("busy").status_code == 429
    assert bertserve.UnavailableError.status_code == 503
