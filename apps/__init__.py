"""brandloop's edge: HTTP apps and the command line.

``apps`` imports ``ner`` and ``flows``; they never import ``apps``.
"""
