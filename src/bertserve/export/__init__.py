"""ONNX export of artifacts (:mod:`.onnx`, student ensembles in :mod:`.ensemble`), and the
cached export a graph runtime loads (:func:`.prepare.prepare`).

Nothing is imported here: the server's front process reads :mod:`.prepare` without torch.
"""
