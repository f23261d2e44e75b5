"""Torch modules: Hugging Face encoders with their heads, slim (pruned) encoders, student
ensembles; :func:`.registry.build_module` builds the one an artifact holds."""
