"""The edge of brandloop: HTTP apps and the CLI. Imports ``ner`` and ``flows``; never imported
by them."""
