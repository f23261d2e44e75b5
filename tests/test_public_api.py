"""The public API is what ``bertserve.__all__`` says; an accidental change fails here."""

import bertserve


def test_all_names_exist_and_are_exported() -> None:
    exported = {n for n in dir(bertserve) if not n.startswith("_") or n == "__version__"}
    assert set(bertserve.__all__) <= exported
    assert {"Encoder", "Manifest", "BertserveError", "load_manifest", "__version__"} <= set(bertserve.__all__)


def test_error_tree_maps_to_statuses() -> None:
    assert issubclass(bertserve.UnsafeWeightsError, bertserve.ArtifactError)
    assert issubclass(bertserve.TextTooLongError, bertserve.InputError)
    from bertserve.serving.http.status import status_of  # statuses belong to the HTTP layer

    assert status_of(bertserve.InputError("x")) == 422 and status_of(bertserve.TextTooLongError("x")) == 413
    assert status_of(bertserve.OverloadedError("busy")) == 429
    assert status_of(bertserve.UnavailableError("x")) == 503
    assert status_of(bertserve.ArtifactError("x")) == 500
